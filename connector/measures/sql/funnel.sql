-- Funnel per pipeline. funnel_deals: deals that reached the stage or a later one (so a skipped
-- stage still counts as passed); funnel_conversion, %: funnel_deals of the next stage /
-- funnel_deals of this one * 100. Stages in pipeline order, the won stage last, lost stages
-- left out; a deal reached the stages it entered (stage history) and the one it is in.
-- measures: funnel_deals, funnel_conversion
-- reads: deals, stages, stage_changes
WITH entered AS (
    SELECT deal_id, step FROM m_deals WHERE step IS NOT NULL
    UNION ALL
    SELECT deal_id, step FROM m_moves WHERE step IS NOT NULL
), reached AS (
    SELECT deal_id, max(step) AS step FROM entered GROUP BY deal_id
), per_step AS (
    SELECT step, count(*) AS n FROM reached GROUP BY step
), counts AS (
    SELECT s.pipeline_id, s.stage_id, s.step,
           sum(coalesce(p.n, 0)) OVER (PARTITION BY s.pipeline_id ORDER BY s.step DESC
                                       ROWS UNBOUNDED PRECEDING) AS n
    FROM m_steps s LEFT JOIN per_step p USING (step)
)
SELECT 'funnel_deals', 'all', 'stage', pipeline_id || '/' || stage_id, n FROM counts
UNION ALL
SELECT 'funnel_conversion', 'all', 'stage', c.pipeline_id || '/' || c.stage_id,
       100.0 * nx.n / nullif(c.n, 0)
FROM counts c JOIN counts nx ON nx.pipeline_id = c.pipeline_id AND nx.step = c.step + 1
