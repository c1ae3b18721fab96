"""Backups of a server's volume (local or S3) and their restore: see service.py."""
