-- deals_won: number of the client's won deals.
SELECT c.entity_id, count(d.deal_id) AS value
FROM kpi_clients c LEFT JOIN kpi_deals d ON d.entity_id = c.entity_id AND d.status = 'won'
GROUP BY c.entity_id
