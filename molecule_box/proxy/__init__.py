"""The A2A proxy: ``POST /workspaces/:id/a2a``, the busy queue, the poll inbox and delegation's delivery.

A peer of the API, split by job: :mod:`.service` is the request path on raw ASGI, :mod:`.route` the pure
decision of what becomes of a call, :mod:`.forward` the forward to the agent and the streamed reply,
:mod:`.queue` the busy queue and its drain, :mod:`.activity` the activity rows and their events.
:mod:`.normalize` is the pure request/response transformation (tested without sockets) and :mod:`.client`
the keep-alive pool of trio streams to agents.
"""
