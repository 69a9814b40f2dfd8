"""Projections of objects into tuples, compiled once from field lists declared elsewhere.

The broker's loop takes a task's row (:mod:`dtf_bus.store.rows`) and its live view
(:func:`dtf_bus.task.live_row`) at every state change. A tuple of plain attribute reads is the
cheapest way Python has to take them (``operator.attrgetter`` over thirteen names costs three
times as much), so, as :mod:`dataclasses` builds ``__init__``, the function is generated from
the declared names instead of being written out by hand beside them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any


def compile_tuple(
    args: Sequence[str], items: Sequence[tuple[str, str]], convert: Mapping[str, Callable[[Any], Any]] | None = None
) -> Callable[..., tuple[Any, ...]]:
    """``lambda *args: (...)`` with one item per ``(arg, attribute)`` (attribute ``""``: the
    argument itself); an attribute named in ``convert`` is passed through its function."""
    convert = dict(convert or {})
    names = [*args, *(attr for _, attr in items if attr), *convert]
    bad = [name for name in names if not name.isidentifier()]
    if bad:
        raise ValueError(f"projection: not identifiers: {bad}")
    parts = []
    for arg, attr in items:
        if arg not in args:
            raise ValueError(f"projection: {arg!r} is not one of the arguments {list(args)}")
        expr = f"{arg}.{attr}" if attr else arg
        parts.append(f"_convert_{attr}({expr})" if attr in convert else expr)
    namespace = {f"_convert_{attr}": fn for attr, fn in convert.items()}
    return eval(f"lambda {', '.join(args)}: ({', '.join(parts)},)", namespace)
