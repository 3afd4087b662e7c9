-- churn_risk: 1 when the client has a won deal, none won in the last [kpi] churn_days days
-- (180 by default) and no open deal; else 0.
-- reads: deals, deal_contacts
SELECT entity_id,
       CASE WHEN won > 0
             AND coalesce(last_won_at, '') < strftime('%Y-%m-%dT%H:%M:%SZ', :now, '-' || :churn_days || ' days')
             AND open = 0
            THEN 1 ELSE 0 END AS value
FROM kpi_deal_totals
