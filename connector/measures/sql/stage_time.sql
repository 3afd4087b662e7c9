-- stage_median_days: median days a deal stays in the stage (from entering it to its next stage
-- change), per pipeline and stage, over stays that ended; a skipped stage has no stay.
-- measures: stage_median_days
-- reads: deals, stage_changes
WITH firsts AS (   -- where each stage's run of stays starts (m_stays is sorted by stage, days)
    SELECT a.pos, a.pipeline_id, a.stage_id FROM m_stays a LEFT JOIN m_stays b ON b.pos = a.pos - 1
    WHERE b.pos IS NULL OR b.pipeline_id IS NOT a.pipeline_id OR b.stage_id IS NOT a.stage_id
), runs AS (
    SELECT pipeline_id, stage_id, pos AS lo,
           coalesce(lead(pos) OVER (ORDER BY pos), (SELECT max(pos) FROM m_stays) + 1) - pos AS n
    FROM firsts
)
SELECT 'stage_median_days', 'all', 'stage', pipeline_id || '/' || stage_id,
       (SELECT avg(s.days) FROM m_stays s WHERE s.pos IN (lo + (n - 1) / 2, lo + n / 2))
FROM runs
