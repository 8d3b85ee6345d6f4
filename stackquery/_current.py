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

RUN_DEFAULT_CLIENT: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "stackquery_run_default_client", default=None
)
"""The trio run's default client (the decorators'), once a decorated call in this
context found it, or ``None``.  Set in the task's own context, so it is per task
and per run: a ``ContextVar`` read costs a third of a ``threading.local`` read,
and a task of another run (or another thread's run) never sees it."""

CALL_CLIENT: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "stackquery_call_client", default=None
)
"""The client a decorated call in this context uses: the innermost ``QueryClient`` open
in it, else the run's default client once this context adopted it (see
:data:`RUN_DEFAULT_CLIENT`), else ``None``.  Set with each of the other two, so that the
decorators' hot path finds its client with one C call wherever it is (reading the
other two in turn took two calls when no client is open)."""
