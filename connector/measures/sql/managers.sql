-- Per manager (the deal's responsible user), over all time: manager_deals_won; manager_win_rate,
-- % = won / (won + lost) * 100 (empty with no closed deal); manager_average_check = revenue /
-- deals won (empty with none won); manager_revenue = sum of won amounts; manager_calls = calls
-- the manager made or took (automated informational calls are nobody's).
-- Every user of the source gets a row, a manager with no closed deals too.
-- measures: manager_deals_won, manager_win_rate, manager_average_check, manager_revenue, manager_calls
-- reads: deals, users, calls
WITH people AS (
    SELECT id AS manager FROM main.users WHERE source = :source
    UNION SELECT manager FROM m_deals WHERE manager IS NOT NULL
), d AS (
    SELECT manager, sum(status = 'won') AS won, sum(status = 'lost') AS lost,
           sum(CASE WHEN status = 'won' THEN amount END) AS revenue
    FROM m_deals WHERE manager IS NOT NULL GROUP BY manager
), c AS (
    SELECT responsible_user_id AS manager, count(*) AS calls FROM main.calls
    WHERE source = :source AND is_deleted = 0 AND is_automated = 0 AND responsible_user_id IS NOT NULL
    GROUP BY 1
), m AS (
    SELECT p.manager, coalesce(d.won, 0) AS won, coalesce(d.lost, 0) AS lost, d.revenue,
           coalesce(c.calls, 0) AS calls
    FROM people p LEFT JOIN d USING (manager) LEFT JOIN c USING (manager)
)
SELECT 'manager_deals_won', 'all', 'manager', manager, won FROM m
UNION ALL SELECT 'manager_win_rate', 'all', 'manager', manager, 100.0 * won / nullif(won + lost, 0) FROM m
UNION ALL SELECT 'manager_average_check', 'all', 'manager', manager, revenue / nullif(won, 0) FROM m
UNION ALL SELECT 'manager_revenue', 'all', 'manager', manager, coalesce(revenue, 0) FROM m
UNION ALL SELECT 'manager_calls', 'all', 'manager', manager, calls FROM m
