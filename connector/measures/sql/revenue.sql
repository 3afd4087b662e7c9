-- Per month (in the account's time zone) and over all time: revenue = sum of the amounts of
-- deals won (by their close); deals_won; new_clients = clients whose first won deal closed then.
-- measures: revenue, deals_won, new_clients
-- reads: deals
WITH w AS (
    SELECT closed_month AS period, sum(amount) AS revenue, count(*) AS won FROM m_deals
    WHERE status = 'won' AND closed_month IS NOT NULL GROUP BY 1
), n AS (
    SELECT cohort AS period, count(*) AS clients FROM m_clients WHERE cohort IS NOT NULL GROUP BY 1
), months AS (
    SELECT m.period, coalesce(w.revenue, 0) AS revenue, coalesce(w.won, 0) AS won,
           coalesce(n.clients, 0) AS clients
    FROM m_months m LEFT JOIN w USING (period) LEFT JOIN n USING (period)
    WHERE m.start <= :now
)
SELECT 'revenue', period, 'all', 'all', revenue FROM months
UNION ALL SELECT 'deals_won', period, 'all', 'all', won FROM months
UNION ALL SELECT 'new_clients', period, 'all', 'all', clients FROM months
UNION ALL SELECT 'revenue', 'all', 'all', 'all', coalesce(sum(revenue), 0) FROM months
UNION ALL SELECT 'deals_won', 'all', 'all', 'all', coalesce(sum(won), 0) FROM months
UNION ALL SELECT 'new_clients', 'all', 'all', 'all', coalesce(sum(clients), 0) FROM months
