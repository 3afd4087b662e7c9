-- first_response_minutes: median over the client's deals of the minutes from the deal's creation
-- to the first outgoing call or completed task on that deal or on the client's card.
-- Deals never answered are left out; empty when no deal was answered.
-- reads: deals, deal_contacts, calls, tasks, activity_bindings
WITH firsts AS (
    SELECT d.entity_id, d.created_at,
           min(coalesce(d.answered_at, '9999'),        -- first answer on the deal itself
               coalesce((SELECT min(a.at) FROM kpi_acts a  -- first answer on the client's card
                         WHERE a.ref_id = d.entity_id AND a.at >= d.created_at), '9999')) AS first_at
    FROM kpi_deals d WHERE d.created_at IS NOT NULL
), answered AS (
    SELECT entity_id, (julianday(first_at) - julianday(created_at)) * 1440 AS minutes
    FROM firsts WHERE first_at < '9999'
), ranked AS (
    SELECT entity_id, minutes,
           row_number() OVER (PARTITION BY entity_id ORDER BY minutes) AS rn,
           count(*) OVER (PARTITION BY entity_id) AS n
    FROM answered
)
SELECT c.entity_id, m.value
FROM kpi_clients c LEFT JOIN (
    SELECT entity_id, avg(minutes) AS value FROM ranked
    WHERE rn IN ((n + 1) / 2, (n + 2) / 2) GROUP BY entity_id) m USING (entity_id)
