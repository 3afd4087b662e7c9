-- churn_risk: 1 when the client has a won deal, none won in the last [kpi] churn_days days
-- (180 by default) and no open deal; else 0.
SELECT c.entity_id,
       CASE WHEN sum(d.status = 'won') > 0
             AND coalesce(max(CASE WHEN d.status = 'won' THEN coalesce(d.closed_at, d.created_at) END), '')
                 < strftime('%Y-%m-%dT%H:%M:%SZ', :now, '-' || :churn_days || ' days')
             AND sum(d.status = 'open') = 0
            THEN 1 ELSE 0 END AS value
FROM kpi_clients c LEFT JOIN kpi_deals d USING (entity_id)
GROUP BY c.entity_id
