"""Which query client is open in the current context (``current_client``).

Apart from ``_client.py`` so that the decorators' hot path can read it as a
C call (``CURRENT_CLIENT.get``, no Python frame) without reaching into the
client module's private names.
"""

from __future__ import annotations

import contextvars
from typing import Any

CURRENT_CLIENT: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "stackquery_current_client", default=None
)
"""The innermost ``QueryClient`` open in this context, or ``None`` (typed ``Any``:
this module cannot import the client's, which imports it)."""
