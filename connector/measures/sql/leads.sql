-- leads: leads received in the month (by creation). lead_conversion, %: deals won in the month /
-- leads received in the month * 100 (the catalogue's lead -> client conversion; period 'all':
-- over all time). lead_to_deal, %: leads received in the month that were converted (status
-- 'converted') / leads received * 100. No row for a month without leads (a CRM without a lead
-- entity, such as amoCRM, has none).
-- measures: leads, lead_conversion, lead_to_deal
-- reads: leads, deals
WITH l AS (
    SELECT local_month(created_at) AS period, count(*) AS n, sum(status = 'converted') AS converted
    FROM main.leads WHERE source = :source AND is_deleted = 0 AND created_at IS NOT NULL GROUP BY 1
), w AS (
    SELECT closed_month AS period, count(*) AS n FROM m_deals WHERE status = 'won' GROUP BY 1
), months AS (
    SELECT l.period, l.n AS leads, l.converted, coalesce(w.n, 0) AS won FROM l LEFT JOIN w USING (period)
    WHERE l.period IS NOT NULL
    UNION ALL
    SELECT 'all', sum(n), sum(converted), (SELECT count(*) FROM m_deals WHERE status = 'won') FROM l
    HAVING count(*) > 0
)
SELECT 'leads', period, 'all', 'all', leads FROM months
UNION ALL SELECT 'lead_conversion', period, 'all', 'all', 100.0 * won / leads FROM months
UNION ALL SELECT 'lead_to_deal', period, 'all', 'all', 100.0 * converted / leads FROM months
