-- response_minutes: median minutes from the client's question (an incoming message, e-mail or
-- SMS, or an incoming call nobody answered) to the next answer (anything outgoing, or an incoming
-- call a manager took) on the client's card or deals. A run of questions waits once, from the
-- first of them; questions still unanswered are left out; empty when none was answered.
-- reads: activities, calls, deals, deal_contacts, activity_bindings
WITH seq AS (
    SELECT entity_id, asks, at,
           lag(asks) OVER (PARTITION BY entity_id ORDER BY at, turn_id) AS before
    FROM kpi_turns
), waits AS (
    SELECT s.entity_id,
           (julianday((SELECT min(o.at) FROM kpi_turns o WHERE o.entity_id = s.entity_id
                       AND o.asks = 0 AND o.at >= s.at)) - julianday(s.at)) * 1440 AS minutes
    FROM seq s WHERE s.asks = 1 AND s.before IS NOT 1
), ranked AS (
    SELECT entity_id, minutes,
           row_number() OVER (PARTITION BY entity_id ORDER BY minutes) AS rn,
           count(*) OVER (PARTITION BY entity_id) AS n
    FROM waits WHERE minutes IS NOT NULL
)
SELECT c.entity_id, m.value
FROM kpi_clients c LEFT JOIN (
    SELECT entity_id, avg(minutes) AS value FROM ranked
    WHERE rn IN ((n + 1) / 2, (n + 2) / 2) GROUP BY entity_id) m USING (entity_id)
