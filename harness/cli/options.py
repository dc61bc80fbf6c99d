"""Options dataclasses: a command's flags declared once, as fields (:func:`option`) that carry
their help, their choices and bounds, and check themselves when the options are built
(docs/design.md, "The command line")."""
from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.checks import at_least, one_of, option as option  # declared where launch/ can
from ..core.errors import HarnessError, SpecError

_TYPES = {'Path': Path, 'int': int, 'float': float}  # by the annotation's first type; else str


class OptionError(HarnessError):
    """A flag's value that no command can use; the message names the flag."""


def redefault(cls: type, name: str, default):
    """``cls``'s option ``name`` (its help, choices and bounds) with another default."""
    return dataclasses.field(default=default, metadata=cls.__dataclass_fields__[name].metadata)


def flag_of(field: dataclasses.Field) -> str:
    return field.metadata.get('flag') or '--' + field.name.replace('_', '-')


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """Declare every field of ``cls`` as an argument of ``parser``."""
    for field in dataclasses.fields(cls):
        meta = field.metadata
        if 'help' not in meta:
            continue
        default = (field.default_factory() if field.default_factory is not dataclasses.MISSING
                   else field.default)  # MISSING: a required flag
        kwargs = dict(help=_help(meta, default))
        if meta['metavar']:
            kwargs['metavar'] = meta['metavar']
        elif meta['choices']:
            kwargs['metavar'] = '{' + ','.join(map(str, meta['choices'])) + '}'
        if isinstance(default, bool):
            kwargs['action'] = 'store_false' if default else 'store_true'
        else:
            kwargs['type'] = meta['parse'] or _TYPES.get(str(field.type).split(' |')[0], str)
            if meta['repeat']:  # each use adds its value(s); from_namespace keeps each once
                kwargs['action'] = 'extend' if meta['parse'] else 'append'
        if meta['positional']:
            parser.add_argument(field.name, **kwargs)
        else:
            names = [flag_of(field)] + ([meta['short']] if meta['short'] else [])
            required = default is dataclasses.MISSING  # no default: 'append' starts from None
            parser.add_argument(*names, dest=field.name, required=required,
                                default=None if required else default, **kwargs)


def _help(meta, default) -> str:
    """The help, and the default where it tells something (a path in the checkout relative)."""
    from ..core.layout import REPO_ROOT
    if default in (dataclasses.MISSING, None, []) or isinstance(default, bool) \
            or '(default' in meta['help']:
        return meta['help']
    if isinstance(default, Path) and default.is_relative_to(REPO_ROOT):
        default = default.relative_to(REPO_ROOT)
    return f"{meta['help']} (default: {default})"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Options:
    """Base of every command's options: each field checked on construction."""

    def __post_init__(self):
        for field in dataclasses.fields(self):
            meta, value = field.metadata, getattr(self, field.name)
            if 'help' not in meta or value is None:
                continue
            flag = flag_of(field) if not meta['positional'] else field.name
            for item in (value if isinstance(value, list) and meta['repeat'] else [value]):
                try:
                    if meta['choices'] is not None:
                        one_of(flag, item, meta['choices'])
                    if meta['minimum'] is not None:
                        at_least(flag, item, meta['minimum'], meta['why'])
                    if meta['check'] is not None:
                        meta['check'](item)
                except SpecError as err:  # a ValueError too: caught first
                    raise OptionError(str(err)) from None
                except ValueError as err:  # the reason, or a whole message naming {flag}
                    reason = str(err)
                    raise OptionError(reason.format(flag=flag, value=item) if '{flag}' in reason
                                      else f"{flag} '{item}' {reason}") from None
        self.check()

    def check(self) -> None:
        """Checks across fields; the mixins chain through ``super().check()``."""

    @classmethod
    def from_namespace(cls, namespace: argparse.Namespace):
        """The options argparse parsed; a repeated flag's values each once, in the order given
        (``--rows a --rows b,a`` is ``a,b``)."""
        values = {f.name: getattr(namespace, f.name) for f in dataclasses.fields(cls)
                  if hasattr(namespace, f.name)}
        return cls(**{name: list(dict.fromkeys(v)) if isinstance(v, list) else v
                      for name, v in values.items()})


@dataclasses.dataclass(frozen=True)
class Command:
    """A subcommand: its name and help, its options, and the function given them."""
    name: str
    help: str
    options: type
    run: Callable[[Any], int]
