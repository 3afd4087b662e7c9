-- overdue_tasks: open tasks on the client's card or deals whose due time has passed.
-- reads: tasks, deals, deal_contacts
SELECT c.entity_id, count(t.entity_id) AS value
FROM kpi_clients c LEFT JOIN kpi_tasks t ON t.entity_id = c.entity_id AND t.is_completed = 0
     AND t.due_at < :now
GROUP BY c.entity_id
