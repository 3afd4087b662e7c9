-- call_minutes_90d: total talk time in minutes (sum of durations / 60) of the client's calls in
-- the last calls_days days (automated informational calls left out).
-- reads: calls, deals, deal_contacts, activity_bindings
SELECT c.entity_id, coalesce(sum(k.duration_s), 0) / 60.0 AS value
FROM kpi_clients c LEFT JOIN kpi_calls k ON k.entity_id = c.entity_id
     AND k.started_at >= strftime('%Y-%m-%dT%H:%M:%SZ', :now, '-' || :calls_days || ' days')
GROUP BY c.entity_id
