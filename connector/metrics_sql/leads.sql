-- leads: leads received in the month (by creation). lead_conversion, %: deals won in the month /
-- leads received in the month * 100 (period 'all': over all time). No row for a month without
-- leads (a CRM without a lead entity, such as amoCRM, has none).
-- measures: leads, lead_conversion
-- reads: leads, deals
WITH l AS (
    SELECT local_month(created_at) AS period, count(*) AS n FROM main.leads
    WHERE source = :source AND is_deleted = 0 AND created_at IS NOT NULL GROUP BY 1
), w AS (
    SELECT closed_month AS period, count(*) AS n FROM m_deals WHERE status = 'won' GROUP BY 1
), months AS (
    SELECT l.period, l.n AS leads, coalesce(w.n, 0) AS won FROM l LEFT JOIN w USING (period)
    WHERE l.period IS NOT NULL
), total AS (
    SELECT 'all' AS period, (SELECT sum(n) FROM l) AS leads, (SELECT count(*) FROM m_deals WHERE status = 'won') AS won
    WHERE EXISTS (SELECT 1 FROM l)
)
SELECT 'leads', period, 'all', 'all', leads FROM months
UNION ALL SELECT 'lead_conversion', period, 'all', 'all', 100.0 * won / leads FROM months
UNION ALL SELECT 'leads', period, 'all', 'all', leads FROM total
UNION ALL SELECT 'lead_conversion', period, 'all', 'all', 100.0 * won / leads FROM total
