"""Lazy imports of the SDKs behind optional extras, with an error that says what to install."""

from __future__ import annotations

import importlib
from typing import Any


def import_extra(module: str, *, extra: str, backend: str) -> Any:
    """Import ``module`` for ``backend``, which needs the ``stackquery[extra]`` extra.

    Returns:
        The module, typed ``Any`` (the SDKs ship no type information).

    Raises:
        ImportError: ``module`` is not installed; the message names the extra.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"{backend} needs {module}, which is not installed: pip install 'stackquery[{extra}]'"
        ) from exc


def optional_error_types(module: str, *names: str) -> tuple[type[BaseException], ...]:
    """Return the exception classes ``names`` of ``module``, or none if it is not installed.

    Used to tell "could not reach the service" errors of an SDK apart without
    making the SDK a dependency of the module that checks.
    """
    try:
        found = importlib.import_module(module)
    except ImportError:
        return ()
    types: list[type[BaseException]] = []
    for name in names:
        candidate = getattr(found, name, None)
        if isinstance(candidate, type) and issubclass(candidate, BaseException):
            types.append(candidate)
    return tuple(types)
