-- Per month. A client is active for [kpi] churn_days after each won deal; it churns when that
-- time runs out with no new win (on or before now). active_clients: active at the month's start;
-- churned_clients: churned during the month; churn_rate, % = churned_clients / active_clients
-- * 100 (no row when none was active). buying_clients: clients with a won deal in the month;
-- repeat_clients: those of them with an earlier win (before, or
-- earlier in the month); repeat_purchase_rate, % = repeat / buying * 100.
-- measures: active_clients, churned_clients, churn_rate, buying_clients, repeat_clients, repeat_purchase_rate
-- reads: deals
WITH wins AS (
    SELECT w.client, w.won_at, w.month, p.won_at AS prev_at, n.won_at AS next_at,
           strftime('%Y-%m-%dT%H:%M:%SZ', w.won_at, '+' || :churn_days || ' days') AS lapse_at
    FROM m_wins w
    LEFT JOIN m_wins p ON p.seq = w.seq - 1 AND p.client = w.client
    LEFT JOIN m_wins n ON n.seq = w.seq + 1 AND n.client = w.client
), events AS (
    SELECT won_at AS at, 1 AS delta FROM wins
    WHERE prev_at IS NULL OR won_at >= strftime('%Y-%m-%dT%H:%M:%SZ', prev_at, '+' || :churn_days || ' days')
    UNION ALL
    SELECT lapse_at, -1 FROM wins
    WHERE (next_at IS NULL OR next_at >= lapse_at) AND lapse_at <= :now
), per AS (
    SELECT local_month(at) AS period, sum(delta = 1) AS gained, sum(delta = -1) AS lost
    FROM events GROUP BY 1
), months AS (
    SELECT m.period, coalesce(sum(coalesce(p.gained, 0) - coalesce(p.lost, 0)) OVER (
               ORDER BY m.period ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS active,
           coalesce(p.lost, 0) AS churned
    FROM m_months m LEFT JOIN per p USING (period) WHERE m.start <= :now
), buys AS (
    SELECT month AS period, client, max(prev_at IS NOT NULL) AS again
    FROM wins GROUP BY 1, 2
), b AS (
    SELECT period, count(*) AS buying, sum(again) AS repeats FROM buys GROUP BY 1
)
SELECT 'active_clients', period, 'all', 'all', active FROM months
UNION ALL SELECT 'churned_clients', period, 'all', 'all', churned FROM months
UNION ALL SELECT 'churn_rate', period, 'all', 'all', 100.0 * churned / active FROM months WHERE active > 0
UNION ALL SELECT 'buying_clients', period, 'all', 'all', buying FROM b
UNION ALL SELECT 'repeat_clients', period, 'all', 'all', repeats FROM b
UNION ALL SELECT 'repeat_purchase_rate', period, 'all', 'all', 100.0 * repeats / buying FROM b
