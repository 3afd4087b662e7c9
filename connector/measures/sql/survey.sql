-- Per month and over all time ('all'), from every survey answer (the CRMs' own and the
-- [kpi.survey] card fields): nps = (promoters, 9-10, - detractors, 0-6) / answers * 100;
-- csat, % = answers of 4 or 5 / answers * 100; nps_answers and csat_answers: the answers counted.
-- measures: nps, nps_answers, csat, csat_answers
-- reads: survey_answers, contacts, companies
WITH g AS (
    SELECT period, kind, count(*) AS n, sum(score >= 9) AS high, sum(score <= 6) AS low,
           sum(score >= 4) AS ok
    FROM m_survey WHERE period IS NOT NULL GROUP BY 1, 2
    UNION ALL
    SELECT 'all', kind, count(*), sum(score >= 9), sum(score <= 6), sum(score >= 4)
    FROM m_survey GROUP BY 2
)
SELECT 'nps', period, 'all', 'all', 100.0 * (high - low) / n FROM g WHERE kind = 'nps'
UNION ALL SELECT 'nps_answers', period, 'all', 'all', n FROM g WHERE kind = 'nps'
UNION ALL SELECT 'csat', period, 'all', 'all', 100.0 * ok / n FROM g WHERE kind = 'csat'
UNION ALL SELECT 'csat_answers', period, 'all', 'all', n FROM g WHERE kind = 'csat'
