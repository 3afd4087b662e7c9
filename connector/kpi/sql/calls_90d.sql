-- calls_90d: a manager's calls (in and out, any outcome; automated informational calls left out)
-- on the client's card or deals, or bound to them, in the last [kpi] calls_days days (90 by default).
-- reads: calls, deals, deal_contacts, activity_bindings
SELECT c.entity_id, count(k.entity_id) AS value
FROM kpi_clients c LEFT JOIN kpi_calls k ON k.entity_id = c.entity_id
     AND k.started_at >= strftime('%Y-%m-%dT%H:%M:%SZ', :now, '-' || :calls_days || ' days')
GROUP BY c.entity_id
