-- deals_open: number of the client's deals still open (neither won nor lost).
SELECT c.entity_id, count(d.deal_id) AS value
FROM kpi_clients c LEFT JOIN kpi_deals d ON d.entity_id = c.entity_id AND d.status = 'open'
GROUP BY c.entity_id
