"""The A2A proxy: ``POST /workspaces/:id/a2a``, the busy queue, the poll inbox and delegation.

Pure request/response transformation lives in :mod:`.normalize` (tested
without sockets); :mod:`.client` is the keep-alive pool of trio streams that
forwards to agents; :mod:`.handler` is the thin raw-ASGI I/O around both.
"""
