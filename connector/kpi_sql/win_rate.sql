-- win_rate, %: won / (won + lost) * 100 over the client's closed deals; empty when none is closed.
SELECT c.entity_id,
       100.0 * sum(d.status = 'won') / nullif(sum(d.status IN ('won', 'lost')), 0) AS value
FROM kpi_clients c LEFT JOIN kpi_deals d USING (entity_id)
GROUP BY c.entity_id
