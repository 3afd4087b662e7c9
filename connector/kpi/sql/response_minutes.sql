-- response_minutes: median minutes from an incoming interaction to the next outgoing one on the
-- client's card or deals. A run of incoming messages waits once, from the first of them;
-- incoming interactions still unanswered are left out; empty when none was answered.
-- reads: activities, deals, deal_contacts, activity_bindings
WITH seq AS (
    SELECT entity_id, direction, at,
           lag(direction) OVER (PARTITION BY entity_id ORDER BY at, act_id) AS before
    FROM kpi_activities
), waits AS (
    SELECT s.entity_id,
           (julianday((SELECT min(o.at) FROM kpi_activities o WHERE o.entity_id = s.entity_id
                       AND o.direction = 'out' AND o.at >= s.at)) - julianday(s.at)) * 1440 AS minutes
    FROM seq s WHERE s.direction = 'in' AND s.before IS NOT 'in'
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
