-- deals_won: number of the client's won deals.
SELECT entity_id, won AS value FROM kpi_deal_totals
