"""Stands in for ``python -m harness`` in the stages of scripts/gpu_check.sh (its
HARNESS_STAND_IN), for the test of the script's own wiring: the stage's command line goes
through the real parser and options checks (a flag the real run would refuse fails here too),
then, instead of the stage's work, each call is appended to ``<out>/<result>.json`` and ``.md``.
A call whose command line contains $STAND_IN_FAILS exits 3, as a failed stage would."""
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.cli import build_parser  # noqa: E402 - after the checkout is importable

args = build_parser().parse_args(sys.argv[1:])
options = args.command_.options.from_namespace(args)  # every check the real command makes
line = ' '.join(sys.argv[1:])
if os.environ.get('STAND_IN_FAILS') and os.environ['STAND_IN_FAILS'] in line:
    sys.exit(3)
name = {'rehearse': 'rehearsal', 'bench': 'bench'}[args.command]
options.out.mkdir(parents=True, exist_ok=True)
record = options.out / f'{name}.json'
calls = json.loads(record.read_text())['cpu'] if record.exists() else []
record.write_text(json.dumps({'cpu': calls + [line]}))
(options.out / f'{name}.md').write_text(f'# {name}\n\n## cpu\n\n' + '\n'.join(calls + [line]))
