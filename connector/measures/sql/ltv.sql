-- ltv: average lifetime value (sum of won amounts to date) of the clients acquired in a month
-- (the month of their first won deal: the cohort), per acquisition channel (the first won
-- deal's channel) and for the whole cohort; period 'all': per channel over every cohort.
-- cohort_clients: how many clients that average is over.
-- measures: ltv, cohort_clients
-- reads: deals
WITH g AS (
    SELECT cohort AS period, 'channel' AS dim, channel AS val, avg(ltv) AS ltv, count(*) AS n
    FROM m_clients WHERE cohort IS NOT NULL GROUP BY cohort, channel
    UNION ALL
    SELECT cohort, 'all', 'all', avg(ltv), count(*) FROM m_clients WHERE cohort IS NOT NULL GROUP BY cohort
    UNION ALL
    SELECT 'all', 'channel', channel, avg(ltv), count(*) FROM m_clients GROUP BY channel
    UNION ALL
    SELECT 'all', 'all', 'all', avg(ltv), count(*) FROM m_clients HAVING count(*) > 0
)
SELECT 'ltv', period, dim, val, ltv FROM g
UNION ALL SELECT 'cohort_clients', period, dim, val, n FROM g
