"""Run code in a fresh interpreter, for tests of what importing or building something loads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

OPTIONAL_MODULES = (
    "trio_asyncio",
    "redis",
    "boto3",
    "botocore",
    "google",
    "opentelemetry",
    "prometheus_client",
    "msgpack",
)
"""Heavy or global-state-changing modules nothing may load before it is used."""

UNTOUCHED_ASYNCIO = {
    "policy_is_default": True,
    "functions_are_asyncio_own": True,
    "run_uses_selector_loop": True,
}
"""What :func:`after` reports about asyncio when nobody patched it."""

_PROBE = """
import asyncio, json, sys

async def _loop_type():
    return type(asyncio.get_running_loop())

_watched = {watched!r}
print(json.dumps({{
    "loaded": sorted(
        name for name in sys.modules
        if any(name == top or name.startswith(top + ".") for top in _watched)
    ),
    "asyncio": {{
        "policy_is_default": type(asyncio.get_event_loop_policy())
        is asyncio.DefaultEventLoopPolicy,
        "functions_are_asyncio_own": asyncio.get_event_loop_policy.__module__
        == asyncio.new_event_loop.__module__ == "asyncio.events",
        "run_uses_selector_loop": asyncio.run(_loop_type()) is asyncio.SelectorEventLoop,
    }},
}}))
"""


def after(code: str, watched: tuple[str, ...] = OPTIONAL_MODULES) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter at the repository root, then look around.

    Returns:
        ``{"loaded": [...], "asyncio": {...}}``: the modules in ``sys.modules``
        that are, or are under, one of ``watched`` (sorted); and how asyncio
        behaves now, comparable to :data:`UNTOUCHED_ASYNCIO`.
    """
    probe = code + "\n" + _PROBE.format(watched=watched)
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT
    )
    report: dict[str, Any] = json.loads(result.stdout)
    return report
