"""The config file: loading, `${ENV}` secrets, and each section's checks (sources, KPIs, report, schedule)."""
