-- first_response_minutes: median over the client's deals of the minutes from the deal's creation
-- to the first outgoing call or completed task on that deal or on the client's card.
-- Deals never answered are left out; empty when no deal was answered.
-- reads: deals, deal_contacts, calls, tasks, activity_bindings
WITH firsts AS (
    SELECT d.entity_id, d.created_at,
           nullif(min(coalesce(d.answered_at, '9999'),        -- first answer on the deal itself
                      coalesce((SELECT min(a.at) FROM kpi_acts a  -- first answer on the client's card
                                WHERE a.ref_id = d.entity_id AND a.at >= d.created_at), '9999')),
                  '9999') AS first_at                          -- empty when never answered
    FROM kpi_deals d WHERE d.created_at IS NOT NULL
)
SELECT c.entity_id, median((julianday(f.first_at) - julianday(f.created_at)) * 1440) AS value
FROM kpi_clients c LEFT JOIN firsts f ON f.entity_id = c.entity_id
GROUP BY c.entity_id
