"""LXD管理面板 front end (seed lxd-panel-api.md; the real project NX2406/lxd at 42bb727): instances,
operations, host info and the /ws/monitor push, over lightd's containers."""
