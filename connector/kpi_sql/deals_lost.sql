-- deals_lost: number of the client's lost deals.
SELECT c.entity_id, count(d.deal_id) AS value
FROM kpi_clients c LEFT JOIN kpi_deals d ON d.entity_id = c.entity_id AND d.status = 'lost'
GROUP BY c.entity_id
