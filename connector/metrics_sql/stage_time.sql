-- stage_median_days: median days a deal stays in the stage (from entering it to its next stage
-- change), per pipeline and stage, over stays that ended; a skipped stage has no stay.
-- measures: stage_median_days
-- reads: deals, stage_changes
WITH moves AS (
    SELECT c.pipeline_id, c.stage_id, c.changed_at,
           lead(c.changed_at) OVER (PARTITION BY c.entity_id ORDER BY c.changed_at, c.id) AS left_at
    FROM main.stage_changes c JOIN m_deals d ON d.deal_id = c.entity_id
    WHERE c.source = :source AND c.entity = 'deal' AND c.changed_at IS NOT NULL
), stays AS (
    SELECT pipeline_id, stage_id, julianday(left_at) - julianday(changed_at) AS days
    FROM moves WHERE left_at IS NOT NULL
), ranked AS (
    SELECT pipeline_id, stage_id, days,
           row_number() OVER (PARTITION BY pipeline_id, stage_id ORDER BY days) AS rn,
           count(*) OVER (PARTITION BY pipeline_id, stage_id) AS n
    FROM stays
)
SELECT 'stage_median_days', 'all', 'stage', pipeline_id || '/' || stage_id, avg(days)
FROM ranked WHERE rn IN ((n + 1) / 2, (n + 2) / 2)
GROUP BY pipeline_id, stage_id
