"""Moving a server to another lightd node: the source streams it (`source.py`), the target receives it
(`target.py`), over the framed stream of `protocol.py`."""
