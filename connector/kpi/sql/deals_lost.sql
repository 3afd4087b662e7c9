-- deals_lost: number of the client's lost deals.
-- reads: deals, deal_contacts
SELECT entity_id, lost AS value FROM kpi_deal_totals
