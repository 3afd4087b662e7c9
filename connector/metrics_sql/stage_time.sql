-- stage_median_days: median days a deal stays in the stage (from entering it to its next stage
-- change), per pipeline and stage, over stays that ended; a skipped stage has no stay.
-- measures: stage_median_days
-- reads: deals, stage_changes
SELECT 'stage_median_days', 'all', 'stage', pipeline_id || '/' || stage_id, avg(days)
FROM (   -- walks the index on (pipeline_id, stage_id, days): no sort, nothing materialised
    SELECT pipeline_id, stage_id, days,
           row_number() OVER w AS rn,
           count(*) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS n
    FROM m_stays WINDOW w AS (PARTITION BY pipeline_id, stage_id ORDER BY days))
WHERE rn IN ((n + 1) / 2, (n + 2) / 2)
GROUP BY pipeline_id, stage_id
