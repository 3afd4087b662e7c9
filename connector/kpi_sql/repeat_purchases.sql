-- repeat_purchases: max(deals_won - 1, 0), the won deals after the first one.
SELECT c.entity_id, max(count(d.deal_id) - 1, 0) AS value
FROM kpi_clients c LEFT JOIN kpi_deals d ON d.entity_id = c.entity_id AND d.status = 'won'
GROUP BY c.entity_id
