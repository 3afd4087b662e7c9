-- win_rate, %: won / (won + lost) * 100 over the client's closed deals; empty when none is closed.
-- reads: deals, deal_contacts
SELECT entity_id, 100.0 * won / nullif(won + lost, 0) AS value FROM kpi_deal_totals
