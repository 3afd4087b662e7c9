-- open_tasks: tasks not completed yet on the client's card or deals.
-- reads: tasks, deals, deal_contacts
SELECT c.entity_id, count(t.entity_id) AS value
FROM kpi_clients c LEFT JOIN kpi_tasks t ON t.entity_id = c.entity_id AND t.is_completed = 0
GROUP BY c.entity_id
