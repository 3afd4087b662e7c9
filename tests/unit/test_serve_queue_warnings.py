"""`serve` keeps waitress's "Task queue depth is N" warnings (one per request that finds every
thread busy) to one line a minute, saying how many it held back and the deepest queue."""

import logging

from connector.cli.serve import QueueWarnings


def test_one_queue_warning_a_minute_with_the_count_held_back(caplog):
    now = [100.0]
    logger = logging.getLogger("waitress.queue.test")
    flt = QueueWarnings(every_s=60, clock=lambda: now[0])
    logger.addFilter(flt)
    try:
        with caplog.at_level(logging.WARNING, logger="waitress.queue.test"):
            for depth in range(1, 1001):
                logger.warning("Task queue depth is %d", depth % 30 + 1)
                now[0] += 0.01  # 1,000 busy requests in 10 s
            assert [r.getMessage() for r in caplog.records] == ["Task queue depth is 2"]
            now[0] += 55
            logger.warning("Task queue depth is %d", 3)
            lines = [r.getMessage() for r in caplog.records]
    finally:
        logger.removeFilter(flt)
    assert len(lines) == 2
    assert lines[1] == (
        "requests waited for a free thread (--threads): queue depth 3 now, "
        "30 at most over the last 65 s, 1000 such request(s)"
    )
