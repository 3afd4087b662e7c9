-- interactions_30d: the client's interactions (calls, e-mails, chats, meetings, SMS; in and out)
-- on its card or deals, or bound to them, in the last [kpi] interactions_days days (30 by default).
-- Only done ones (a planned meeting next week is none yet); automated calls are no interaction.
-- reads: activities, deals, deal_contacts, activity_bindings
SELECT c.entity_id, count(a.entity_id) AS value
FROM kpi_clients c LEFT JOIN kpi_activities a ON a.entity_id = c.entity_id
     AND a.at >= strftime('%Y-%m-%dT%H:%M:%SZ', :now, '-' || :interactions_days || ' days')
GROUP BY c.entity_id
