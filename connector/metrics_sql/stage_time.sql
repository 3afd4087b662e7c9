-- stage_median_days: median days a deal stays in the stage (from entering it to its next stage
-- change), per pipeline and stage, over stays that ended; a skipped stage has no stay.
-- measures: stage_median_days
-- reads: deals, stage_changes
WITH stays AS (
    SELECT a.pipeline_id, a.stage_id, julianday(b.changed_at) - julianday(a.changed_at) AS days
    FROM m_moves a JOIN m_moves b ON b.seq = a.seq + 1 AND b.deal_id = a.deal_id
), ranked AS (
    SELECT pipeline_id, stage_id, days,
           row_number() OVER (PARTITION BY pipeline_id, stage_id ORDER BY days) AS rn,
           count(*) OVER (PARTITION BY pipeline_id, stage_id) AS n
    FROM stays
)
SELECT 'stage_median_days', 'all', 'stage', pipeline_id || '/' || stage_id, avg(days)
FROM ranked WHERE rn IN ((n + 1) / 2, (n + 2) / 2)
GROUP BY pipeline_id, stage_id
