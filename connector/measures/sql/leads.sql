-- leads: leads received in the month (by creation). lead_conversion, %: of the leads received in
-- the month, the share that became a won deal (a live won deal whose `lead_id` is the lead:
-- Bitrix24's LEAD_ID, the lead the deal was converted from); a cohort, so never above 100, and a
-- month's share still grows while its deals close. lead_to_deal, %: of the leads received in the
-- month, the share converted (status 'converted'), won or not. Period 'all': every lead. No row
-- for a month without leads (a CRM without a lead entity, such as amoCRM, has none).
-- measures: leads, lead_conversion, lead_to_deal
-- reads: leads, deals
WITH won AS (
    SELECT DISTINCT lead_id FROM main.deals
    WHERE source = :source AND is_deleted = 0 AND status = 'won' AND lead_id IS NOT NULL
), l AS (
    SELECT local_month(l.created_at) AS period, count(*) AS n, sum(l.status = 'converted') AS converted,
           sum(w.lead_id IS NOT NULL) AS won
    FROM main.leads l LEFT JOIN won w ON w.lead_id = l.id
    WHERE l.source = :source AND l.is_deleted = 0 AND l.created_at IS NOT NULL GROUP BY 1
), months AS (
    SELECT period, n AS leads, converted, won FROM l WHERE period IS NOT NULL
    UNION ALL
    SELECT 'all', sum(n), sum(converted), sum(won) FROM l HAVING count(*) > 0
)
SELECT 'leads', period, 'all', 'all', leads FROM months
UNION ALL SELECT 'lead_conversion', period, 'all', 'all', 100.0 * won / leads FROM months
UNION ALL SELECT 'lead_to_deal', period, 'all', 'all', 100.0 * converted / leads FROM months
