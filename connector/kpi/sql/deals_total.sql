-- deals_total: number of the client's deals, whatever their status (deleted deals never count).
-- reads: deals, deal_contacts
SELECT entity_id, deals AS value FROM kpi_deal_totals
