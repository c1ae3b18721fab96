"""ProxiCloud front end (seed proxicloud-api.md, spec compat.md §3): containers addressed by integer vmids,
power tasks with PVE-style UPIDs, templates, a dashboard with an activity log and 30-day analytics, over
lightd's containers."""
