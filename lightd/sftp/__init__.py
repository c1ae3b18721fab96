"""The built-in SFTP server: the asyncssh listener, logins and live sessions (server.py), one session over
the volume sandbox (session.py) and its synchronous file operations (volume_ops.py), login rate limits and
session counts (limits.py)."""
