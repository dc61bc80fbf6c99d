"""Checks of single values shared by the job request and the command line: one implementation
each, the caller names the value (a request field, a command-line flag)."""
from __future__ import annotations

from collections.abc import Sequence

from .errors import SpecError
from .profiles import TOTAL_BATCH


def _listed(choices: Sequence) -> str:
    names = [str(c) for c in choices]
    return ', '.join(names[:-1]) + f' or {names[-1]}' if len(names) > 1 else names[0]


def one_of(name: str, value, choices: Sequence) -> None:
    if value not in choices:
        raise SpecError(f"unknown {name} '{value}' (choose {_listed(choices)})")


def at_least(name: str, value, minimum, why: str = '') -> None:
    if value < minimum:
        raise SpecError(f'{name} must be at least {minimum}, got {value}{why}')


def divides_batch(name: str, processes: int, plural: bool = False) -> None:
    """The total batch is divided among a job's processes: refuse a count that does not divide
    it (``name`` says which count: a flag, or the request's)."""
    if processes < 1 or TOTAL_BATCH % processes:
        raise SpecError(f"{name} {'do' if plural else 'does'} not divide the total batch "
                        f'{TOTAL_BATCH}')
