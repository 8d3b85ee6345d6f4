"""Which query client a call in the current context finds (``current_client``, the run's
default, the one a decorated call uses).

Apart from ``_client.py`` so that the decorators' hot path can read them as
C calls (``CURRENT_CLIENT.get``, no Python frame) without reaching into the
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

CALL_CLIENT: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "stackquery_call_client", default=None
)
"""The client a decorated call in this context uses: the innermost ``QueryClient`` open
in it, else the trio run's default client (the decorators') once a decorated call in
this context found it, else ``None``.  Set by ``QueryClient.__aenter__`` (reset by its
``__aexit__``) and when the run's default is adopted, in the task's own context, so it
is per task and per run: a task of another run (or another thread's run) never sees
it.  One C call finds the client wherever it comes from (a ``ContextVar`` read costs a
third of a ``threading.local`` read)."""
