-- interactions_30d_email: the client's e-mails (channel 'email', in and out) on its card or deals in
-- the last [kpi] interactions_days days (30 by default).
-- reads: activities, deals, deal_contacts, activity_bindings
SELECT c.entity_id, count(a.entity_id) AS value
FROM kpi_clients c LEFT JOIN kpi_activities a ON a.entity_id = c.entity_id AND a.channel = 'email'
     AND a.at >= strftime('%Y-%m-%dT%H:%M:%SZ', :now, '-' || :interactions_days || ' days')
GROUP BY c.entity_id
