"""The attach endpoint: a running client's snapshot, statistics and commands on a Unix socket.

``QueryClientConfig(admin_socket=PATH)`` makes the client serve it while it is
open; ``stackquery top / inspect / invalidate --attach PATH`` and
:func:`open_admin_connection` talk to it.  The protocol is in ``docs/cli.md``.
"""

from ._connection import AdminConnection, AdminError, open_admin_connection
from ._protocol import MAX_REQUEST_LINE, PROTOCOL_VERSION, ErrorCode
from ._server import AdminLimits, AdminSocketError

__all__ = [
    "MAX_REQUEST_LINE",
    "PROTOCOL_VERSION",
    "AdminConnection",
    "AdminError",
    "AdminLimits",
    "AdminSocketError",
    "ErrorCode",
    "open_admin_connection",
]
