"""Reports: read a run's records, summarise and compare them, write REPORT.md and its plots."""
