"""LXC Tools compatibility front end (the `Centralize/lxc` Flask API and its Socket.IO events)."""
