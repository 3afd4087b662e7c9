-- avg_cycle_days: mean of (closed_at - created_at) in days over the client's won deals.
SELECT c.entity_id, avg(julianday(d.closed_at) - julianday(d.created_at)) AS value
FROM kpi_clients c LEFT JOIN kpi_deals d ON d.entity_id = c.entity_id AND d.status = 'won'
GROUP BY c.entity_id
