"""Checks of single values shared by the job request and the command line: one implementation
each, the caller names the value (a request field, a command-line flag)."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from .errors import SpecError


def _listed(choices: Sequence) -> str:
    names = [str(c) for c in choices]
    return ', '.join(names[:-1]) + f' or {names[-1]}' if len(names) > 1 else names[0]


def one_of(name: str, value, choices: Sequence) -> None:
    if value not in choices:
        raise SpecError(f"unknown {name} '{value}' (choose {_listed(choices)})")


def at_least(name: str, value, minimum, why: str = '') -> None:
    if value < minimum:
        raise SpecError(f'{name} must be at least {minimum}, got {value}{why}')


def divides_batch(name: str, processes: int, batch: int, whose: str,
                  plural: bool = False) -> None:
    """A job's total batch (its dataset's, ``experiments/datasets.yaml``) is divided among its
    processes: refuse a count that does not divide it (``name`` says which count: a flag, or the
    request's; ``whose`` the dataset, for the line)."""
    if processes < 1 or batch % processes:
        raise SpecError(f"{name} {'do' if plural else 'does'} not divide the total batch "
                        f'{batch} ({whose})')


def option(default: Any = dataclasses.MISSING, *, help: str, flag: str | None = None,
           short: str | None = None, choices: Sequence | None = None, minimum=None,
           check: Callable[[Any], None] | None = None, parse: Callable[[str], Any] | None = None,
           metavar: str | None = None, repeat: bool = False, positional: bool = False,
           default_factory: Callable[[], Any] | None = None, why: str = ''):
    """A dataclass field that is also a command-line flag (``cli/options.py`` builds the flag
    and checks the value); declared here so that any layer may own one. ``flag`` defaults to
    ``--<name-with-dashes>``; a boolean whose default is True is switched off by its ``flag``
    (e.g. ``--no-report``). ``check(value)`` raises ValueError with the reason for a value it
    refuses; ``why`` is added to a bound's message."""
    metadata = dict(help=help, flag=flag, short=short, choices=choices, minimum=minimum,
                    check=check, parse=parse, metavar=metavar, repeat=repeat,
                    positional=positional, why=why)
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)
