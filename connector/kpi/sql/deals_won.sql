-- deals_won: number of the client's won deals.
-- reads: deals, deal_contacts
SELECT entity_id, won AS value FROM kpi_deal_totals
