-- days_since_last_purchase: whole days from the client's latest won deal (its close date) to now;
-- empty with no won deal.
SELECT c.entity_id,
       CAST(julianday(:now) - julianday(max(coalesce(d.closed_at, d.created_at))) AS INTEGER) AS value
FROM kpi_clients c LEFT JOIN kpi_deals d ON d.entity_id = c.entity_id AND d.status = 'won'
GROUP BY c.entity_id
