"""The code's structure: one owner of the job folder's names, packages as layers that import
only the ones below them (no cycle, a core without torch or mmengine), small modules, one
atomic write, and one job request that survives the trip through the job folder."""
import ast
import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.core import layout
from harness.core.request import JobRequest
from harness.core.spec import EXPERIMENTS, load_table
from tests.helpers import encoder_shapes, harness_cli, random_state, row_dims

HARNESS = Path(__file__).resolve().parents[1] / 'harness'


def _modules(root: Path = HARNESS) -> dict[str, Path]:
    found = {}
    for path in root.rglob('*.py'):
        parts = path.relative_to(root.parent).with_suffix('').parts
        name = '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path, modules: dict) -> set[str]:
    """The harness modules ``name`` imports, at module level or inside functions."""
    package = name if path.name == '__init__.py' else name.rsplit('.', 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split('.')[:len(package.split('.')) - node.level + 1] \
                if node.level else []
            target = '.'.join(base + ([node.module] if node.module else []))
            # `from .. import runtime` imports harness.runtime, not what harness/__init__ holds
            candidates = [f'{target}.{a.name}' if f'{target}.{a.name}' in modules else target
                          for a in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found |= {c for c in candidates if c in modules and c != name}
    return found


def test_job_folder_names_are_spelled_in_the_layout_module_only():
    names = [layout.REQUEST_FILE, layout.STATE_FILE, layout.LOG_FILE, layout.LOCK_FILE,
             layout.CONFIG_FILE, layout.POINTER, layout.CHECKPOINT_STAGING,
             str(layout.CURVES_FILE), layout.PER_CLASS_FILE, layout.RESULT_FILE,
                 *layout.EVAL_DIRS.values(),
             *layout.RELEASED_PROFILES.values(), layout.VIS_DIR, layout.DATA_CONTENTS_FILE]
    for name, path in _modules().items():
        if name == 'harness.core.layout':
            continue
        text = path.read_text()
        spelled = [n for n in names if n in text]
        assert not spelled, f'{path.relative_to(HARNESS.parent)} spells {spelled}'


# The packages as layers: a module imports its own package and the ones ranked below it, at
# module level or inside a function alike, and a type name it puts in a config (``type='X'``)
# counts as an import of the module that registers X. models and runtime are peers, and so are
# assets and results: neither of a pair imports the other.
RANKS = {'core': 0, 'models': 1, 'runtime': 1, 'prepare': 2, 'assets': 3, 'results': 3,
         'launch': 4, 'measure': 5, 'cli': 6, '': 7}
HEAVY = ('torch', 'mmengine', 'mmseg', 'mmcv', 'wandb', 'matplotlib')


def _package(module: str) -> str:
    parts = module.split('.')
    return parts[1] if len(parts) > 1 and parts[1] in RANKS else ''


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import that goes up or sideways between two packages, and every cycle between
    packages, one line each."""
    found = []
    for name, deps in graph.items():
        for dep in deps:
            a, b = _package(name), _package(dep)
            if a != b and RANKS[b] >= RANKS[a]:
                found.append(f'{name} ({a or "harness"}) imports {dep} ({b or "harness"})')
    packages = {}
    for name, deps in graph.items():
        packages.setdefault(_package(name), set()).update(
            _package(d) for d in deps if _package(d) != _package(name))

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for dep in packages.get(todo.pop(), ()):
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return seen

    found += [f'package cycle through {p}' for p in packages if p in reach(p)]
    return found


def _registered(modules: dict) -> dict[str, str]:
    """{registry type name: the harness module that registers it} (``@X.register_module()``)."""
    found = {}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any(
                    isinstance(d, ast.Call) and getattr(d.func, 'attr', '') == 'register_module'
                    for d in node.decorator_list):
                found[node.name] = name
    return found


def _types_named(path: Path, registered: dict) -> set[str]:
    """The harness modules whose classes ``path`` names by registry type (``type='X'``,
    ``{'type': 'X'}``, ``cfg.x.type = 'X'``): a config built here makes mmengine build them."""
    named = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.keyword) and node.arg == 'type':
            named.add(node.value)
        elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Attribute) and t.attr == 'type' for t in node.targets):
            named.add(node.value)  # cfg.optim_wrapper.type = 'X'
        elif isinstance(node, ast.Dict):
            named |= {v for k, v in zip(node.keys, node.values)
                      if isinstance(k, ast.Constant) and k.value == 'type'}
    return {registered[v.value] for v in named
            if isinstance(v, ast.Constant) and v.value in registered}


def _graph(root: Path = HARNESS) -> dict[str, set[str]]:
    modules = _modules(root)
    registered = _registered(modules)
    return {name: (_imports(name, path, modules) | _types_named(path, registered)) - {name}
            for name, path in modules.items()}


def test_each_package_imports_only_the_layers_below_it():
    assert layer_violations(_graph()) == []


def test_the_layer_rule_catches_a_cycle_between_two_packages(tmp_path):
    """The rule on a copy of the tree with one import added: core importing results, while
    results imports core."""
    copy = tmp_path / 'harness'
    shutil.copytree(HARNESS, copy, ignore=shutil.ignore_patterns('__pycache__'))
    state = copy / 'core' / 'state.py'
    state.write_text(state.read_text() + '\n\ndef _late():\n    from ..results import collect\n')
    found = layer_violations(_graph(copy))
    assert 'harness.core.state (core) imports harness.results.collect (results)' in found
    assert 'package cycle through core' in found and 'package cycle through results' in found


def test_the_layer_rule_reads_registry_type_names(tmp_path):
    """A config that names a runtime hook by its registry type depends on the module that
    registers it, as an import would: core naming one breaks the rule."""
    copy = tmp_path / 'harness'
    shutil.copytree(HARNESS, copy, ignore=shutil.ignore_patterns('__pycache__'))
    state = copy / 'core' / 'state.py'
    state.write_text(state.read_text() + "\n\nHOOK = dict(type='PreemptionHook')\n")
    found = layer_violations(_graph(copy))
    assert 'harness.core.state (core) imports harness.runtime.preempt (runtime)' in found
    assert 'package cycle through core' in found  # runtime imports core


def test_the_core_imports_nothing_heavy_and_a_report_loads_no_mmengine():
    for name, path in _modules().items():
        if _package(name) != 'core':
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ''] if isinstance(node, ast.ImportFrom) and not node.level
                     else [])
            heavy = [n for n in names if n.split('.')[0] in HEAVY]
            assert not heavy, f'{path.relative_to(HARNESS.parent)} imports {heavy}'
    probe = subprocess.run(
        [sys.executable, '-c', 'import sys, harness.results.report, harness.cli; '
         'print(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1:])))', *HEAVY],
        capture_output=True, text=True, cwd=HARNESS.parent, check=True)
    assert probe.stdout.strip() == "['matplotlib']", probe.stdout


def test_no_module_is_over_400_lines_and_one_helper_renames_files():
    for name, path in _modules().items():
        lines = path.read_text().count('\n')
        assert lines <= 400, f'{path.relative_to(HARNESS.parent)}: {lines} lines'
        if name != 'harness.core.atomic':
            text = path.read_text()
            assert 'os.replace(' not in text and '.rename(' not in text, path


def test_job_config_names_the_runtime_package_and_the_models():
    from harness.prepare.job_config import build_config
    row = load_table('table3').rows[0]
    cfg = build_config(JobRequest(row=row, profile='smoke', seed=0, work_dir=None,
                                  data_root=None))
    assert cfg.custom_imports['imports'] == ['harness.models', 'harness.runtime']


def test_request_survives_the_job_folder_unchanged(tmp_path):
    spec = tmp_path / 'mine.yaml'  # a spec given by path travels as its path
    shutil.copy(EXPERIMENTS / 'table6.yaml', spec)
    row = load_table(spec).row('seg-t-mask-16')
    request = JobRequest(row=row, profile='full', seed=3, work_dir=tmp_path / 'job',
                         data_root=tmp_path / 'data', gpus=2, weights_root=tmp_path,
                         wandb_project='p', checkpoint=tmp_path / 'c.pth', multi_scale=True,
                         released=True, amp='bf16', max_iters=7, batch=2, wandb_run_id='r',
                         workers=3, accept_drift=True, checkpoint_sha256='ab' * 32)
    request.write(tmp_path / layout.REQUEST_FILE)
    again = JobRequest.read(tmp_path / layout.REQUEST_FILE)
    assert again == request and again.row.spec_path == spec
    for field in dataclasses.fields(JobRequest):  # every field made the trip, none defaulted
        assert getattr(again, field.name) == getattr(request, field.name), field.name
        assert getattr(request, field.name) != field.default, field.name


@pytest.mark.parametrize('bad, message', [
    (dict(profile='huge'), "unknown profile 'huge'"),
    (dict(amp='int8'), "unknown precision 'int8'"),
    (dict(gpus=3), 'a job of 3 processes does not divide the total batch 8'),
    (dict(released=True), 'a released model is evaluated from its checkpoint: none given'),
])
def test_request_refuses_what_no_job_can_run(bad, message):
    row = load_table('table3').rows[0]
    fields = dict(row=row, profile='smoke', seed=0, work_dir=None, data_root=None) | bad
    with pytest.raises(ValueError, match=message):
        JobRequest(**fields)


def test_convert_pretrained_checks_keys_and_shapes_as_weights_does(tmp_path):
    """``convert-pretrained`` is ``weights --from`` for one row: a release of another width is
    refused with one line and nothing is written; the right one is converted once."""
    row = load_table('table3').row('seg-t-16')
    _, dims = row_dims(row)
    generator = torch.Generator().manual_seed(0)
    wrong = random_state(encoder_shapes(d=64, layers=dims['layers'], patch=16,
                                        distilled=False), generator)
    torch.save({'model': wrong}, tmp_path / 'wrong.pth')
    out = tmp_path / 'converted.pth'
    refused = harness_cli('convert-pretrained', tmp_path / 'wrong.pth', '--table', 'table3',
                          '--row', row.id, '--out', out)
    assert refused.returncode == 2 and refused.stderr.count('\n') == 1, refused.stderr
    assert 'is not a usable release' in refused.stderr and not out.exists()
    right = random_state(encoder_shapes(d=dims['d'], layers=dims['layers'], patch=16,
                                        distilled=False), generator)
    torch.save({'model': right}, tmp_path / 'right.pth')
    done = harness_cli('convert-pretrained', tmp_path / 'right.pth', '--table', 'table3',
                       '--row', row.id, '--out', out)
    assert done.returncode == 0, done.stderr
    converted = torch.load(out, weights_only=True)
    assert torch.equal(converted['layers.0.attn.attn.in_proj_weight'],
                       right['blocks.0.attn.qkv.weight'])
