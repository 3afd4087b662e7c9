-- manager_response_minutes: median minutes from an incoming interaction on a card or deal
-- to the next outgoing one there, counted for the manager who sent that answer. A run of
-- incoming messages waits once, from the first; unanswered ones are left out.
-- measures: manager_response_minutes
-- reads: activities
WITH a AS (
    SELECT entity_type, entity_id, direction, at,
           lag(direction) OVER (PARTITION BY entity_type, entity_id ORDER BY at, id) AS before
    FROM m_acts
), waits AS (
    SELECT i.at AS asked,
           (SELECT o.at || '|' || coalesce(o.manager, '') FROM m_acts o
            WHERE o.entity_type = i.entity_type AND o.entity_id = i.entity_id
              AND o.direction = 'out' AND o.at >= i.at ORDER BY o.at, o.id LIMIT 1) AS answer
    FROM a i WHERE i.direction = 'in' AND i.before IS NOT 'in'
), answered AS (
    SELECT substr(answer, instr(answer, '|') + 1) AS manager,
           (julianday(substr(answer, 1, instr(answer, '|') - 1)) - julianday(asked)) * 1440 AS minutes
    FROM waits WHERE answer IS NOT NULL
), ranked AS (
    SELECT manager, minutes, row_number() OVER (PARTITION BY manager ORDER BY minutes) AS rn,
           count(*) OVER (PARTITION BY manager) AS n
    FROM answered WHERE manager != ''
)
SELECT 'manager_response_minutes', 'all', 'manager', manager, avg(minutes)
FROM ranked WHERE rn IN ((n + 1) / 2, (n + 2) / 2) GROUP BY manager
