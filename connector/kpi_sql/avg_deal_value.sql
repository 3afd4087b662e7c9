-- avg_deal_value: revenue_won / deals_won (won deals with a known amount); empty with no won deal.
SELECT c.entity_id, avg(d.amount) AS value
FROM kpi_clients c LEFT JOIN kpi_deals d ON d.entity_id = c.entity_id AND d.status = 'won'
GROUP BY c.entity_id
