-- revenue_won (lifetime revenue): sum of the amounts of won deals, in the source's base currency.
-- Deals in a currency without a rate in [kpi.currency_rates] are left out.
SELECT c.entity_id, coalesce(sum(d.amount), 0) AS value
FROM kpi_clients c LEFT JOIN kpi_deals d ON d.entity_id = c.entity_id AND d.status = 'won'
GROUP BY c.entity_id
