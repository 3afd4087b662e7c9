-- revenue_won (lifetime revenue): sum of the amounts of won deals, in the source's base currency.
-- Deals in a currency without a rate in [kpi.currency_rates] are left out.
-- reads: deals, deal_contacts
SELECT entity_id, coalesce(won_amount, 0) AS value FROM kpi_deal_totals
