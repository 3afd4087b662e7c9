-- days_to_next_contact: whole days from now to the client's next planned contact: the earliest
-- activity not done yet whose time is still ahead (a meeting or call set for a later day,
-- Bitrix24 COMPLETED N) on its card or deals, or bound to them; 0 when it is within a day; empty
-- with none. amoCRM records no planned activities (its plans are tasks): always empty there.
-- reads: activities, activity_bindings, deals, deal_contacts
WITH planned AS (
    SELECT id, entity_type, entity_id, at FROM main.activities
    WHERE source = :source AND is_deleted = 0 AND is_completed = 0 AND at > :now
), bound AS (
    SELECT entity_type, entity_id, at FROM planned
    UNION ALL
    SELECT b.entity_type, b.entity_id, p.at
    FROM planned p JOIN main.activity_bindings b ON b.source = :source AND b.activity_id = p.id
), next AS (
    SELECT c.entity_id, n.at FROM kpi_clients c
    JOIN bound n ON n.entity_type = :target AND n.entity_id = c.entity_id
    UNION ALL
    SELECT d.entity_id, n.at FROM kpi_deals d JOIN bound n ON n.entity_type = 'deal' AND n.entity_id = d.deal_id
)
SELECT c.entity_id, CAST(julianday(min(n.at)) - julianday(:now) AS INTEGER) AS value
FROM kpi_clients c LEFT JOIN next n ON n.entity_id = c.entity_id
GROUP BY c.entity_id
