"""lightd: a game-server daemon that drives Docker containers over HTTP."""

__version__ = "0.1.0"
