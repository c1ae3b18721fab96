"""Volumes: directories on disk with a sandboxed file API."""
