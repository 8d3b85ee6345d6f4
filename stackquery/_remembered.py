"""The options each key was last read with, kept small: a key's own query_fn, shared settings.

``refetch_queries`` fetches an unobserved key with the options it was last
read with, so the L1 table keeps them for every key.  A million keys read
with options built per read would keep a million :class:`QueryOptions` (31
slots, about 290 bytes, plus the key tuple), though most of them differ from
one another only in their key and ``query_fn``.  So what a key keeps is its
``query_fn`` and a reference to a *template*: the first options seen with
the same settings (every field but ``query_key`` and ``query_fn``), shared by
every key read alike.  The options are built again from the two, and from
the key's hash, only when a refetch needs them: equal to those remembered
(the same objects in every field, the key equal).
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable
from typing import Any, Final, NamedTuple

import attrs

from ._keys import key_from_hash
from ._options import QueryOptions

_PER_KEY: Final = frozenset({"query_key", "query_fn"})
"""The fields a key keeps of its own; every other field given at construction is a setting."""
SETTINGS: Final = tuple(
    field.name for field in attrs.fields(QueryOptions) if field.init and field.name not in _PER_KEY
)
"""The fields two options must share (the same object, or an equal number) to share a template."""

TEMPLATES_MAX: Final = 256
"""Templates looked up by their settings; past this many the lookup starts over (a template
is referenced by the keys that use it, not by the lookup, so nothing is lost but sharing)."""


def _same_value(a: object, b: object) -> bool:
    """Two setting values that are the same object or equal numbers (an ``int`` or a
    ``float`` computed per read: ``stale_time=minutes * 60``)."""
    if a is b:
        return True
    kind = type(a)
    return kind is type(b) and (kind is float or kind is int) and a == b


def same_settings(a: QueryOptions[Any], b: QueryOptions[Any]) -> bool:
    """Whether every setting (:data:`SETTINGS`) of ``a`` and ``b`` is the same object, or an
    equal number of the same type."""
    # Written out, not a loop over SETTINGS: a stale hit runs this once, and these
    # attribute reads cost about 4,400 instructions against 17,600 for a loop of
    # getattr() (a stale hit is about 68,000).  test_remembered_options checks
    # that each setting is tested.
    return (
        a.stale_time is b.stale_time
        and a.gc_time is b.gc_time
        and a.retry is b.retry
        and a.retry_delay is b.retry_delay
        and a.enabled is b.enabled
        and a.refetch_interval is b.refetch_interval
        and a.select is b.select
        and a.placeholder_data is b.placeholder_data
        and a.initial_data is b.initial_data
        and a.initial_data_updated_at is b.initial_data_updated_at
        and a.timeout is b.timeout
        and a.on_success is b.on_success
        and a.on_error is b.on_error
        and a.on_settled is b.on_settled
        and a.single_flight is b.single_flight
        and a.max_age is b.max_age
        and a.stale_if_error is b.stale_if_error
        and a.circuit is b.circuit
        and a.meta is b.meta
        and a.jitter is b.jitter
        and a.error_ttl is b.error_ttl
        and a.cache_if is b.cache_if
        and a.max_stale is b.max_stale
    ) or all(_same_value(getattr(a, name), getattr(b, name)) for name in SETTINGS)


def same_run(template: QueryOptions[Any], options_list: list[QueryOptions[Any]], start: int) -> int:
    """The end of the run of ``options_list`` from ``start`` on whose keys are in their
    canonical form (``query_key`` is ``key``) and whose every setting is the same object
    as ``template``'s: each of them :func:`same_settings` with ``template``.  An equal
    number that is not the same object ends the run (:func:`same_settings` judges it).
    """
    # The template's settings read once, not once a key: a batch of 10,000 keys read alike
    # compares each key's with these locals.  test_remembered_options checks that each
    # setting ends a run.
    stale_time = template.stale_time
    gc_time = template.gc_time
    retry = template.retry
    retry_delay = template.retry_delay
    enabled = template.enabled
    refetch_interval = template.refetch_interval
    select = template.select
    placeholder_data = template.placeholder_data
    initial_data = template.initial_data
    initial_data_updated_at = template.initial_data_updated_at
    timeout = template.timeout
    on_success = template.on_success
    on_error = template.on_error
    on_settled = template.on_settled
    single_flight = template.single_flight
    max_age = template.max_age
    stale_if_error = template.stale_if_error
    circuit = template.circuit
    meta = template.meta
    jitter = template.jitter
    error_ttl = template.error_ttl
    cache_if = template.cache_if
    max_stale = template.max_stale
    end = start
    for options in itertools.islice(options_list, start, None):
        if (
            options.query_key is not options.key
            or options.stale_time is not stale_time
            or options.gc_time is not gc_time
            or options.retry is not retry
            or options.retry_delay is not retry_delay
            or options.enabled is not enabled
            or options.refetch_interval is not refetch_interval
            or options.select is not select
            or options.placeholder_data is not placeholder_data
            or options.initial_data is not initial_data
            or options.initial_data_updated_at is not initial_data_updated_at
            or options.timeout is not timeout
            or options.on_success is not on_success
            or options.on_error is not on_error
            or options.on_settled is not on_settled
            or options.single_flight is not single_flight
            or options.max_age is not max_age
            or options.stale_if_error is not stale_if_error
            or options.circuit is not circuit
            or options.meta is not meta
            or options.jitter is not jitter
            or options.error_ttl is not error_ttl
            or options.cache_if is not cache_if
            or options.max_stale is not max_stale
        ):
            break
        end += 1
    return end


_query_fn: Final = operator.attrgetter("query_fn")
_settings: Final[Callable[[QueryOptions[Any]], tuple[object, ...]]] = operator.attrgetter(
    *(name for name in SETTINGS if name != "meta")
)
"""What templates are looked up by: the settings' values (``meta``, a mapping that has no
hash, is left to :func:`same_settings`).  A template found is checked with it: equal
values (``True`` and ``1``) are not always the same setting."""


class Run(NamedTuple):
    """Options ``start`` to ``end`` (excluded) of a list, each with the settings of ``like``
    (the same objects: see :func:`same_run`)."""

    start: int
    end: int
    like: QueryOptions[Any]


@attrs.frozen(weakref_slot=False)
class Remembered:
    """A key's ``query_fn`` and the template of its other settings (see the module)."""

    template: QueryOptions[Any]
    query_fn: Callable[..., Any]


class Templates:
    """The templates of one client's keys, and the compact form each key's options are kept in.

    A key's options are kept as one of:

    * the :class:`QueryOptions` themselves (the first of their settings, or a key that
      is not its canonical form, such as one holding a dict);
    * their ``query_fn`` alone, when their settings are those of :attr:`primary`;
    * a :class:`Remembered` (``query_fn`` and template) otherwise.
    """

    def __init__(self) -> None:
        self.primary: QueryOptions[Any] | None = None
        """The first template shared by two keys: its keys keep their ``query_fn`` alone.
        Never replaced (those keys name it by keeping nothing else)."""
        self._by_settings: dict[tuple[object, ...], QueryOptions[Any]] = {}
        self._last: QueryOptions[Any] | None = None
        """The template found last: a run of keys read alike finds it at once."""
        self._given: QueryOptions[Any] | None = None
        self._kept: object = None
        """Options :meth:`compact` was given and what it answered: the last ones that
        matched a template (any answer stays right for its options)."""

    def compact(self, options: QueryOptions[Any]) -> object:
        """What the table keeps of ``options`` (see the class); never raises."""
        if options is self._given:
            # The same options again (every caller parked on a key's fetch reads it with
            # them): the same answer, without comparing their settings with a template's.
            return self._kept
        if options.query_key is not options.key:
            return options  # a key that cannot be rebuilt as it was given from its hash
        template = self._last
        if template is None or not same_settings(template, options):
            settings = _settings(options)
            by_settings = self._by_settings
            try:
                template = by_settings.get(settings)
            except Exception:  # a setting without a hash (a list as initial_data), or whose
                return options  # == raised: kept whole, as it was before templates
            if template is None or not same_settings(template, options):
                if len(by_settings) >= TEMPLATES_MAX:
                    by_settings.clear()
                by_settings[settings] = self._last = options
                return options  # the first of its settings: kept whole, as the template
            self._last = template
        kept: object
        if template is options:
            kept = options
        else:
            primary = self.primary
            if primary is None:
                primary = self.primary = template
            fn = options.query_fn
            kept = fn if template is primary else Remembered(template, fn)
        self._given, self._kept = options, kept
        return kept

    def compact_many(self, options_list: list[QueryOptions[Any]]) -> tuple[list[object], list[Run]]:
        """:meth:`compact` of each of ``options_list``, in order, and the runs of them read
        alike; never raises.

        A run of options read alike (the keys of a batch) is compared with the
        template the first of them matched by :func:`same_run`, with none of
        :meth:`compact`'s other steps per key; an option that ends the run goes
        through :meth:`compact` (and may start the next run).  The runs cover
        ``options_list`` in order: what a batch reads of the settings of a run's
        ``like`` holds for each key of the run, so it is read once a run.
        """
        compact = self.compact
        kept_list: list[object] = []
        append = kept_list.append
        runs: list[Run] = []
        count = len(options_list)
        place = 0
        while place < count:
            options = options_list[place]
            kept = compact(options)
            append(kept)
            # The options compact() was given are a run of their own: compact() answers
            # options seen last without comparing them, with another template last found.
            runs.append(Run(place, place + 1, options))
            place += 1
            template = self._last
            # Options kept whole but as their run's template (a key that cannot be rebuilt
            # from its hash, settings without a hash) start no run.
            if template is None or (kept is options and template is not options):
                continue
            end = same_run(template, options_list, place)
            if end == place:
                continue
            primary = self.primary
            if primary is None:
                primary = self.primary = template
            fns = map(_query_fn, options_list[place:end])
            kept_list.extend(
                fns if template is primary else map(Remembered, itertools.repeat(template), fns)
            )
            runs.append(Run(place, end, template))
            place = end
        return kept_list, runs

    def expand(self, key_hash: str, kept: object) -> QueryOptions[Any] | None:
        """The options :meth:`compact` kept as ``kept`` for the key ``key_hash`` (``None``:
        none kept): equal to those given it, built again if need be.

        Raises:
            Exception: whatever building them again raised (it does not: they were
                built once with the same values).
        """
        if kept is None or isinstance(kept, QueryOptions):
            return kept
        if isinstance(kept, Remembered):
            template, query_fn = kept.template, kept.query_fn
        else:  # a query_fn alone: the primary's settings
            assert self.primary is not None and callable(kept)
            template, query_fn = self.primary, kept
        if template.key_hash == key_hash and template.query_fn is query_fn:
            return template
        return attrs.evolve(template, query_key=key_from_hash(key_hash), query_fn=query_fn)


__all__ = [
    "SETTINGS",
    "TEMPLATES_MAX",
    "Remembered",
    "Run",
    "Templates",
    "same_run",
    "same_settings",
]
