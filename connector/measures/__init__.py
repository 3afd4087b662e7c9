"""Team and business measures (funnel, managers, revenue, churn ...): one SQL file per group in `sql/`, into the `metrics` table."""
