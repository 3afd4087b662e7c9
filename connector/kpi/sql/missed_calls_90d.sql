-- missed_calls_90d: incoming calls nobody answered (status missed, direction in) on the client's
-- card or deals in the last calls_days days. Outgoing calls that did not connect are `failed`.
-- reads: calls, deals, deal_contacts, activity_bindings
SELECT c.entity_id, count(k.entity_id) AS value
FROM kpi_clients c LEFT JOIN kpi_calls k ON k.entity_id = c.entity_id
     AND k.status = 'missed' AND k.direction = 'in'
     AND k.started_at >= strftime('%Y-%m-%dT%H:%M:%SZ', :now, '-' || :calls_days || ' days')
GROUP BY c.entity_id
