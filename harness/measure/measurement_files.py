"""The measurements' files: each result is a pydantic model, filed as JSON with its markdown
beside it, both written together and both from the models.

A file maps keys (a device kind, a precision) to runs. Each run carries its ``format``; a run
that does not validate as the current model (another number, fields that are not the current
type's) is dropped when the file is read, with a one-line note, and measured again by the next
run of its command: no renderer knows an older shape.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, model_serializer

from ..core.atomic import publish
from ..core.errors import StateError


class Record(BaseModel):
    """One object of a measurements' file: every key a field, no other key."""
    model_config = ConfigDict(extra='forbid')

    @model_serializer(mode='wrap')
    def _absent_stays_absent(self, handler):
        # a measurement a run did not take is no key in the file, not a null
        return {k: v for k, v in handler(self).items()
                if v is not None or type(self).model_fields[k].default is not None}


def load(path: Path, run_type: type[Record], depth: int, command: str) -> dict:
    """The runs of ``path`` (``depth`` levels of keys above each run) that validate as
    ``run_type``, strictly, as JSON (a number is no string, a bool no number); the others
    dropped, each with a note that ``make <command>`` measures it again. Nothing on record:
    ``{}``."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise StateError(f'{path} is not JSON ({err})') from None

    def runs(level, depth: int, keys: tuple) -> dict:
        kept = {}
        for key, value in (level.items() if isinstance(level, dict) else ()):
            if depth:
                if inner := runs(value, depth - 1, keys + (key,)):
                    kept[key] = inner
                continue
            try:
                kept[key] = run_type.model_validate_json(json.dumps(value), strict=True)
            except ValidationError:
                print(f"note: {path} {' '.join(keys + (key,))}: measured in an older format: "
                      f'run `make {command}` again', file=sys.stderr, flush=True)
        return kept

    return runs(data, depth, ())


def save(folder: Path, name: str, runs: dict, markdown: str) -> None:
    """``<name>.json`` (``runs``) and ``<name>.md`` (``markdown``) into ``folder``: neither
    takes its name before both are written, so the two always agree."""
    folder.mkdir(parents=True, exist_ok=True)
    publish({folder / f'{name}.json': json.dumps(runs, indent=1,
                                                 default=Record.model_dump).encode(),
             folder / f'{name}.md': markdown.encode()})
