"""Per-client KPIs: one SQL file per KPI in `sql/`, the scratch inputs they read (`prep`, `survey`), custom SQL checks and the write-back to the CRM cards."""
