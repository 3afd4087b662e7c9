-- days_since_last_interaction: whole days from the client's latest interaction (any channel or
-- direction, on its card or deals) to now; empty with no interaction.
-- reads: activities, deals, deal_contacts, activity_bindings
SELECT c.entity_id, CAST(julianday(:now) - julianday(max(a.at)) AS INTEGER) AS value
FROM kpi_clients c LEFT JOIN kpi_activities a ON a.entity_id = c.entity_id AND a.at <= :now
GROUP BY c.entity_id
