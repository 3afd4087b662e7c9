-- last_purchase_on: the date (in the account's time zone) of the client's latest won deal (its
-- close date); empty with no won deal. The card-field form of days_since_last_purchase: it
-- changes only with a new purchase.
-- type: date
-- reads: deals, deal_contacts
SELECT entity_id, CAST(strftime('%Y%m%d', last_won_at, :utc_offset) AS INTEGER) AS value
FROM kpi_deal_totals
