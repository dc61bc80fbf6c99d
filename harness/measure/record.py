"""The measurements' files: each result is a versioned dataclass, filed as JSON with its markdown
beside it, both written together and both from the dataclasses.

A file maps keys (a device kind, a precision) to runs. Each run carries its ``format``; a run
that is not in the current one (another number, or fields that are not the current type's) is
dropped when the file is read, with a one-line note, and measured again by the next run of its
command: no renderer knows an older shape. Runs filed before the field existed carry none and
read as format 1 when they have its shape.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from pathlib import Path

from ..core.atomic import publish
from ..core.errors import StateError


class FormatMismatch(Exception):
    """A value that is not the shape of the type it is read as (internal to reading)."""


def to_json(value):
    """``value`` as JSON data: dataclasses as objects, a field left out when it is None and
    None is its default (so an absent measurement stays absent)."""
    if dataclasses.is_dataclass(value):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not (getattr(value, f.name) is None and f.default is None)}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    return value


def from_json(kind: type, data):
    """``data`` read as the dataclass ``kind``: every key a field, every field without a default
    present, each value of its field's type. Raises FormatMismatch."""
    if not isinstance(data, dict):
        raise FormatMismatch(f'{kind.__name__}: not an object')
    fields = {f.name: f for f in dataclasses.fields(kind)}
    unknown = set(data) - set(fields)
    if unknown:
        raise FormatMismatch(f'{kind.__name__}: unknown {sorted(unknown)}')
    hints = typing.get_type_hints(kind)
    values = {}
    for name, field in fields.items():
        if name in data:
            values[name] = _read(hints[name], data[name])
        elif field.default is dataclasses.MISSING \
                and field.default_factory is dataclasses.MISSING:
            raise FormatMismatch(f'{kind.__name__}: no {name}')
    return kind(**values)


def _read(hint, value):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _read(arg, value)
            except FormatMismatch:
                continue
        raise FormatMismatch(f'{value!r} is none of {hint}')
    if dataclasses.is_dataclass(hint):
        return from_json(hint, value)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise FormatMismatch(f'{value!r} is not a list')
        items = args[:1] * len(value) if origin is list or args[-1:] == (...,) else args
        if len(items) != len(value):
            raise FormatMismatch(f'{value!r} is not {hint}')
        return origin(_read(a, v) for a, v in zip(items, value))
    if origin is dict:
        if not isinstance(value, dict):
            raise FormatMismatch(f'{value!r} is not an object')
        return {k: _read(args[1], v) for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(hint, type) and (not isinstance(value, hint)
                                   or isinstance(value, bool) and hint is not bool):
        raise FormatMismatch(f'{value!r} is not {hint.__name__}')
    return value


def load(path: Path, run_type: type, depth: int, command: str) -> dict:
    """The runs of ``path`` (``depth`` levels of keys above each run) in the current format of
    ``run_type`` (its ``format`` field's default); the others dropped, each with a note that
    ``make <command>`` measures it again. Nothing on record: ``{}``."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise StateError(f'{path} is not JSON ({err})') from None
    current = {f.name: f.default for f in dataclasses.fields(run_type)}['format']

    def runs(level: dict, depth: int, keys: tuple) -> dict:
        kept = {}
        for key, value in level.items():
            if depth:
                inner = runs(value if isinstance(value, dict) else {}, depth - 1, keys + (key,))
                if inner:
                    kept[key] = inner
                continue
            try:
                if isinstance(value, dict) and value.get('format', current) != current:
                    raise FormatMismatch(f"format {value['format']}")
                kept[key] = from_json(run_type, value)
            except FormatMismatch:
                print(f"note: {path} {' '.join(keys + (key,))}: measured in an older format: "
                      f'run `make {command}` again', file=sys.stderr, flush=True)
        return kept

    return runs(data if isinstance(data, dict) else {}, depth, ())


def save(folder: Path, name: str, runs: dict, markdown: str) -> None:
    """``<name>.json`` (``runs``) and ``<name>.md`` (``markdown``) into ``folder``: neither
    takes its name before both are written, so the two always agree."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    publish({folder / f'{name}.json': json.dumps(to_json(runs), indent=1).encode(),
             folder / f'{name}.md': markdown.encode()})
