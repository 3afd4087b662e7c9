-- Per acquisition channel and month, and per channel over all time ('all'): spend (the
-- [kpi.spend] file, in the source's currency); acquired_clients (first won deal in that month via
-- that channel); cac = spend / acquired_clients (empty with no new client); ltv_cac = ltv of that
-- cohort and channel / cac (healthy at 3 or more). Channels with spend but no clients included.
-- measures: spend, acquired_clients, cac, ltv_cac
-- reads: deals
WITH n AS (
    SELECT cohort AS period, channel, count(*) AS clients, avg(ltv) AS ltv FROM m_clients
    WHERE cohort IS NOT NULL GROUP BY 1, 2
    UNION ALL
    SELECT 'all', channel, count(*), avg(ltv) FROM m_clients GROUP BY 2
), s AS (
    SELECT period, channel, amount FROM m_spend
    UNION ALL
    SELECT 'all', channel, sum(amount) FROM m_spend GROUP BY channel
), j AS (
    SELECT s.period, s.channel, s.amount AS spend, coalesce(n.clients, 0) AS clients, n.ltv
    FROM s LEFT JOIN n ON n.period = s.period AND n.channel = s.channel
)
SELECT 'spend', period, 'channel', channel, spend FROM j
UNION ALL SELECT 'acquired_clients', period, 'channel', channel, clients FROM j
UNION ALL SELECT 'cac', period, 'channel', channel, spend / nullif(clients, 0) FROM j
UNION ALL SELECT 'ltv_cac', period, 'channel', channel, ltv / nullif(spend / nullif(clients, 0), 0) FROM j
