"""Running jobs: the one job runner (`jobs`), the sync wire (`sync`), the KPI job, locks, notifications, progress and the daemon's scheduler."""
