-- last_interaction_on: the date (in the account's time zone) of the client's latest interaction,
-- any channel or direction, on its card or deals; empty with no interaction. Unlike
-- days_since_last_interaction it changes only when there is a new interaction, so it suits a
-- card field: a quiet night writes nothing.
-- type: date
-- reads: activities, deals, deal_contacts
SELECT c.entity_id, CAST(strftime('%Y%m%d', max(a.at), :utc_offset) AS INTEGER) AS value
FROM kpi_clients c LEFT JOIN kpi_activities a ON a.entity_id = c.entity_id AND a.at <= :now
GROUP BY c.entity_id
