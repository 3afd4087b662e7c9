-- response_minutes: median minutes from the client's question (an incoming message, e-mail or
-- SMS, or an incoming call nobody answered) to the next answer (anything outgoing, or an incoming
-- call a manager took) on the client's card or deals. A run of questions waits once, from the
-- first of them; questions still unanswered are left out; empty when none was answered.
-- reads: activities, calls, deals, deal_contacts, activity_bindings
WITH waits AS (
    -- a question whose previous turn (in time order) was no question starts a wait, which lasts
    -- until the first answer at or after its time (both found by key seeks in kpi_turns)
    SELECT s.entity_id,
           (julianday((SELECT o.at FROM kpi_turns o WHERE o.entity_id = s.entity_id
                       AND o.at >= s.at AND o.asks = 0 ORDER BY o.at LIMIT 1))
            - julianday(s.at)) * 1440 AS minutes
    FROM kpi_turns s
    WHERE s.asks = 1
      AND (SELECT p.asks FROM kpi_turns p WHERE p.entity_id = s.entity_id
           AND (p.at, p.turn_id) < (s.at, s.turn_id)
           ORDER BY p.at DESC, p.turn_id DESC LIMIT 1) IS NOT 1
)
SELECT c.entity_id, median(w.minutes) AS value
FROM kpi_clients c LEFT JOIN waits w ON w.entity_id = c.entity_id
GROUP BY c.entity_id
