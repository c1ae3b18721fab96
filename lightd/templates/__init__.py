"""Server templates: lightd's own form, Pterodactyl eggs converted to it, variables and their rules, and the
config-file edits made before every start. Kept free of imports: `servers/models.py` uses `templates.models`."""
