-- interactions_30d: the client's interactions (calls, e-mails, meetings, SMS, in and out, each
-- once; chats once per conversation, as interactions_30d_chat counts them) on its card or deals,
-- or bound to them, in the last [kpi] interactions_days days (30 by default). Only done ones (a
-- planned meeting next week is none yet); automated calls are no interaction.
-- reads: activities, deals, deal_contacts, activity_bindings
SELECT c.entity_id, count(a.entity_id) AS value
FROM kpi_clients c LEFT JOIN kpi_activities a ON a.entity_id = c.entity_id
     AND a.at >= strftime('%Y-%m-%dT%H:%M:%SZ', :now, '-' || :interactions_days || ' days')
     AND (a.channel IS NOT 'chat' OR NOT EXISTS (
         SELECT 1 FROM kpi_activities p WHERE p.entity_id = a.entity_id AND p.channel = 'chat'
           AND p.at >= strftime('%Y-%m-%dT%H:%M:%SZ', a.at, '-24 hours')
           AND (p.at < a.at OR (p.at = a.at AND p.act_id < a.act_id))))
GROUP BY c.entity_id
