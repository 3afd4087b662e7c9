"""Five-field crontab text as APScheduler 3 triggers, with cron's own day-of-week numbering.

Used by the scheduler to build its jobs and by the config to reject a bad `[schedule]` early.
"""

from __future__ import annotations

from apscheduler.triggers.cron import CronTrigger

DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


FULL_DAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")


def _day(text: str) -> int:
    """A day of the week as cron numbers it: 0-7, or a name ("mon" or "monday")."""
    if text in DAYS or text in FULL_DAYS:
        return DAYS.index(text[:3])
    if not text.isdigit():
        raise ValueError(f"bad day of the week '{text}' (0-7 or mon, tue, ...)")
    return int(text)


def cron_day_of_week(field: str) -> str:
    """A crontab day-of-week field as APScheduler 3 reads it.

    APScheduler 3 counts 0 = Monday and `from_crontab` passes the field through, so a user's
    `1-5` (Monday to Friday in cron) would run Tuesday to Saturday. We spell the days out.
    """
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in field.lower().split(","):
        rng, _, step = part.partition("/")
        if rng == "*":
            lo, hi = 0, 6
        elif "-" in rng:
            lo, hi = (_day(x) for x in rng.split("-", 1))
        else:
            lo = _day(rng)
            hi = 6 if step else lo  # cron: "1/2" means from Monday, every other day
        if not (0 <= lo <= hi <= 7):
            raise ValueError(f"bad day-of-week '{part}' (0-7, 0 and 7 are Sunday)")
        days.update(d % 7 for d in range(lo, hi + 1, int(step or 1)))
    return ",".join(DAYS[d] for d in sorted(days))


def cron_trigger(expr: str, tz) -> CronTrigger:
    """A trigger from five-field crontab text, with cron's own day-of-week numbering."""
    values = expr.split()
    if len(values) != 5:
        raise ValueError(f"wrong number of fields; got {len(values)}, expected 5")
    return CronTrigger(
        minute=values[0],
        hour=values[1],
        day=values[2],
        month=values[3],
        day_of_week=cron_day_of_week(values[4]),
        timezone=tz,
    )
