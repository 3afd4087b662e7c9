-- interactions_30d_chat: the client's chat conversations on its card or deals begun in the last
-- [kpi] interactions_days days (30 by default). A conversation is a run of chat rows with no
-- pause over 24 hours, in and out: amoCRM lists each chat message, Bitrix24 each open-lines
-- session, and both count the same conversations.
-- reads: activities, deals, deal_contacts, activity_bindings
SELECT c.entity_id, count(a.entity_id) AS value
FROM kpi_clients c LEFT JOIN kpi_activities a ON a.entity_id = c.entity_id AND a.channel = 'chat'
     AND a.at >= strftime('%Y-%m-%dT%H:%M:%SZ', :now, '-' || :interactions_days || ' days')
     AND NOT EXISTS (SELECT 1 FROM kpi_activities p WHERE p.entity_id = a.entity_id AND p.channel = 'chat'
                     AND p.at >= strftime('%Y-%m-%dT%H:%M:%SZ', a.at, '-24 hours')
                     AND (p.at < a.at OR (p.at = a.at AND p.act_id < a.act_id)))
GROUP BY c.entity_id
