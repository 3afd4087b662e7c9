-- deals_total: number of the client's deals, whatever their status (deleted deals never count).
SELECT c.entity_id, count(d.deal_id) AS value
FROM kpi_clients c LEFT JOIN kpi_deals d USING (entity_id)
GROUP BY c.entity_id
