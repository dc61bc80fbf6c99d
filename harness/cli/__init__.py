"""The command line, ``python -m harness <command>``: one module per command. Each parses its
flags into an options dataclass that checks itself and hands it to the command's function,
which calls the stages with keyword arguments."""
from __future__ import annotations

import argparse
import importlib
import signal
import sys

from ..core.errors import HarnessError
from .options import Command, add_arguments

COMMANDS: list[Command] = [importlib.import_module(f'{__name__}.{name}').COMMAND for name in (
    'run', 'evaluate', 'report', 'status', 'plan', 'weights', 'check_data', 'rehearse', 'bench',
    'convert_official', 'convert_pretrained', 'sync_help', 'verify', 'record')]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m harness',
        description='Reproduce the Segmenter ADE20K tables (arXiv 2105.05633) with mmseg.')
    sub = parser.add_subparsers(dest='command', required=True)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        add_arguments(p, command.options)
        p.set_defaults(command_=command)
    return parser


def main(argv=None) -> int:
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        args = build_parser().parse_args(argv)  # a flag's own parser may refuse its value
        command = args.command_
        return command.run(command.options.from_namespace(args))
    except (HarnessError, FileExistsError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    except OSError as err:  # a disk or permission problem outside the checks: still one line
        print(f'error: {os_error_line(err)}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('interrupted: run the same command again to resume', file=sys.stderr)
        return 130


def os_error_line(err: OSError) -> str:
    """The file first, then what happened to it (``[Errno 28] ...: 'path'`` buries the path)."""
    if err.filename is None or not err.strerror:
        return str(err).replace('\n', ' ')
    also = f' -> {err.filename2}' if err.filename2 is not None else ''
    return f'{err.filename}{also}: {err.strerror}'
