-- Funnel per pipeline. funnel_deals: deals that reached the stage or a later one (so a skipped
-- stage still counts as passed); funnel_conversion, %: funnel_deals of the next stage /
-- funnel_deals of this one * 100. Stages in pipeline order, the won stage last, lost stages
-- left out; a deal reached the stages it entered (stage history) and the one it is in.
-- measures: funnel_deals, funnel_conversion
-- reads: deals, stages, stage_changes
WITH steps AS (
    SELECT pipeline_id, id AS stage_id,
           row_number() OVER (PARTITION BY pipeline_id
                              ORDER BY semantics = 'won', sort, id) AS pos
    FROM main.stages
    WHERE source = :source AND coalesce(entity, 'deal') = 'deal' AND coalesce(semantics, 'open') != 'lost'
), entered AS (
    SELECT d.deal_id, d.pipeline_id, d.stage_id FROM m_deals d
    UNION ALL
    SELECT c.entity_id, d.pipeline_id, c.stage_id FROM main.stage_changes c
    JOIN m_deals d ON d.deal_id = c.entity_id AND d.pipeline_id = c.pipeline_id
    WHERE c.source = :source AND c.entity = 'deal'
), reached AS (
    SELECT e.pipeline_id, e.deal_id, max(s.pos) AS pos
    FROM entered e JOIN steps s ON s.pipeline_id = e.pipeline_id AND s.stage_id = e.stage_id
    GROUP BY e.pipeline_id, e.deal_id
), per_pos AS (
    SELECT pipeline_id, pos, count(*) AS n FROM reached GROUP BY 1, 2
), counts AS (
    SELECT s.pipeline_id, s.stage_id, s.pos,
           sum(coalesce(p.n, 0)) OVER (PARTITION BY s.pipeline_id ORDER BY s.pos DESC
                                       ROWS UNBOUNDED PRECEDING) AS n
    FROM steps s LEFT JOIN per_pos p ON p.pipeline_id = s.pipeline_id AND p.pos = s.pos
)
SELECT 'funnel_deals', 'all', 'stage', pipeline_id || '/' || stage_id, n FROM counts
UNION ALL
SELECT 'funnel_conversion', 'all', 'stage', c.pipeline_id || '/' || c.stage_id,
       100.0 * nx.n / nullif(c.n, 0)
FROM counts c JOIN counts nx ON nx.pipeline_id = c.pipeline_id AND nx.pos = c.pos + 1
