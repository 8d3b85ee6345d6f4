"""Key templates: how a decorated function's arguments become its cache key.

A template is checked against the function's signature once, when
decorating, so that a placeholder naming no parameter is an error then and
never a key silently shared by every call.  At call time the template gives
the key's *parts*: the template text followed by the placeholder values
themselves (not their text), so ``order:{}:{}`` called with ``("1:2", "3")``
and with ``("1", "2:3")`` are two keys, and ``f(1)`` and ``f(True)`` are two
keys too.
"""

from __future__ import annotations

import inspect
import string
from collections.abc import Callable
from typing import Any, final

import attrs

from .._errors import StackqueryError

KeyTemplateSpec = str | Callable[..., Any] | None
"""What ``key=`` accepts: a template string, a callable, or ``None`` (every argument)."""

_POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class KeyTemplateError(StackqueryError, ValueError):
    """A key template does not fit the function it decorates.

    Raised when decorating: a placeholder names no parameter, there are more
    ``{}`` placeholders than positional parameters, or the template uses a
    conversion, a format spec or an attribute/index lookup (use a callable
    key for those).
    """


@final
@attrs.frozen
class KeyTemplate:
    """A key template bound to one function's signature.

    Build it with :meth:`for_function`; :meth:`parts` turns a call's
    arguments into the key's parts.
    """

    text: str | None
    """The template string; ``None`` for a callable key or the default key."""
    signature: inspect.Signature
    """The decorated function's signature (placeholders resolve through it, defaults applied)."""
    fields: tuple[str, ...]
    """The parameter each placeholder takes its value from, in order."""
    key_fn: Callable[..., Any] | None = None
    """A callable key: called with the call's arguments; its result is the key's one part."""

    @property
    def is_static(self) -> bool:
        """Whether every call maps to one key (a template without placeholders)."""
        return self.key_fn is None and self.text is not None and not self.fields

    @property
    def is_callable(self) -> bool:
        """Whether the key is computed by a user callable (so it may vary between equal calls)."""
        return self.key_fn is not None

    @classmethod
    def for_function(cls, key: KeyTemplateSpec, func: Callable[..., Any]) -> KeyTemplate:
        """Check ``key`` against ``func``'s signature and return the bound template.

        ``None`` keys on every argument (after defaults); ``"flags"`` is one
        key for every call; ``"user:{}"`` takes positional parameters in
        order; ``"order:{user_id}:{order_id}"`` takes parameters by name,
        whether they were passed by position or by keyword or defaulted; a
        callable gets the call's arguments and returns the key.

        Raises:
            KeyTemplateError: the template does not fit ``func``'s signature.
            TypeError: ``key`` is neither a string, a callable nor ``None``;
                ``func`` has no inspectable signature.
        """
        signature = inspect.signature(func)
        params = signature.parameters
        if key is None:
            return cls(text=None, signature=signature, fields=tuple(params))
        if isinstance(key, str):
            return cls(text=key, signature=signature, fields=_template_fields(key, func, params))
        if callable(key):
            return cls(text=None, signature=signature, fields=(), key_fn=key)
        raise TypeError(
            f"key must be a template string, a callable or None, got {type(key).__name__}: {key!r}"
        )

    def parts(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        """Return the key's parts for a call with ``args`` and ``kwargs``.

        Raises:
            TypeError: the arguments do not fit the function's signature
                (the same error calling the function would raise).
            Exception: whatever a callable key raises.
        """
        if self.key_fn is not None:
            return (self.key_fn(*args, **kwargs),)
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = bound.arguments
        if self.text is None:
            return tuple(values[name] for name in self.fields)
        return (self.text, *(values[name] for name in self.fields))


def _template_fields(text: str, func: Callable[..., Any], params: Any) -> tuple[str, ...]:
    name = getattr(func, "__qualname__", repr(func))
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise KeyTemplateError(f"key template {text!r} of {name}() is malformed: {exc}") from None
    positional = [p for p, param in params.items() if param.kind in _POSITIONAL]
    fields: list[str] = []
    auto = manual = False
    next_auto = 0
    for _literal, field, spec, conversion in parsed:
        if field is None:
            continue
        if spec or conversion:
            raise KeyTemplateError(
                f"key template {text!r} of {name}(): conversions and format specs are not "
                "supported (the key holds the argument's value, not its text)"
            )
        if field == "" or field.isdigit():
            auto, manual = auto or field == "", manual or field != ""
            if auto and manual:
                raise KeyTemplateError(
                    f"key template {text!r} of {name}() mixes '{{}}' and numbered placeholders"
                )
            if field == "":
                index, next_auto = next_auto, next_auto + 1
            else:
                index = int(field)
            if index >= len(positional):
                raise KeyTemplateError(
                    f"key template {text!r} of {name}() has a positional placeholder #{index} "
                    f"but {name}() has {len(positional)} positional parameter(s)"
                )
            fields.append(positional[index])
        elif field.isidentifier():
            if field not in params:
                known = ", ".join(params) or "none"
                raise KeyTemplateError(
                    f"key template {text!r} of {name}() names {field!r}, which is not a "
                    f"parameter of {name}() (parameters: {known})"
                )
            fields.append(field)
        else:
            raise KeyTemplateError(
                f"key template {text!r} of {name}(): placeholder {{{field}}} is neither a "
                "parameter name nor a position; use a callable key for attribute or index lookups"
            )
    return tuple(fields)
