"""Container Codes compatibility front end (seed container-codes-api.md)."""
