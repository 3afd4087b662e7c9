-- avg_cycle_days: mean of (closed_at - created_at) in days over the client's won deals.
-- reads: deals, deal_contacts
SELECT entity_id, won_cycle_days AS value FROM kpi_deal_totals
