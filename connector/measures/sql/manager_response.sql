-- manager_response_minutes: median minutes from a client's question on a card or deal (an
-- incoming message, e-mail or SMS, or an incoming call nobody answered) to the next answer there
-- (anything outgoing, or an incoming call a manager took), counted for the manager who answered.
-- A run of questions waits once, from the first; unanswered ones are left out.
-- measures: manager_response_minutes
-- reads: activities, calls
WITH waits AS (
    SELECT i.at AS asked,
           (SELECT min(o.seq) FROM m_acts o WHERE o.entity_type = i.entity_type
              AND o.entity_id = i.entity_id AND o.turn = 'answer' AND o.seq > i.seq) AS answer
    FROM m_acts i LEFT JOIN m_acts b ON b.seq = i.seq - 1 AND b.entity_type = i.entity_type
         AND b.entity_id = i.entity_id
    WHERE i.turn = 'ask' AND b.turn IS NOT 'ask'
), answered AS (
    SELECT o.manager, (julianday(o.at) - julianday(w.asked)) * 1440 AS minutes
    FROM waits w JOIN m_acts o ON o.seq = w.answer
), ranked AS (
    SELECT manager, minutes, row_number() OVER w AS rn,   -- one window: one sort
           count(*) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS n
    FROM answered WHERE manager IS NOT NULL WINDOW w AS (PARTITION BY manager ORDER BY minutes)
)
SELECT 'manager_response_minutes', 'all', 'manager', manager, avg(minutes)
FROM ranked WHERE rn IN ((n + 1) / 2, (n + 2) / 2) GROUP BY manager
