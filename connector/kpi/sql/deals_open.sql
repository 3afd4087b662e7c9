-- deals_open: number of the client's deals still open (neither won nor lost).
-- reads: deals, deal_contacts
SELECT entity_id, open AS value FROM kpi_deal_totals
