-- repeat_purchases: max(deals_won - 1, 0), the won deals after the first one.
-- reads: deals, deal_contacts
SELECT entity_id, max(won - 1, 0) AS value FROM kpi_deal_totals
