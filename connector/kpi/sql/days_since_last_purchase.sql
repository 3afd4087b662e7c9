-- days_since_last_purchase: whole days from the client's latest won deal (its close date) to now;
-- empty with no won deal.
-- reads: deals, deal_contacts
SELECT entity_id, CAST(julianday(:now) - julianday(last_won_at) AS INTEGER) AS value
FROM kpi_deal_totals
