-- avg_deal_value: revenue_won / deals_won (won deals with a known amount); empty with no won deal.
-- reads: deals, deal_contacts
SELECT entity_id, won_amount_avg AS value FROM kpi_deal_totals
