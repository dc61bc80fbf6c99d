"""The code's structure: one owner of the job folder's names, the Runner's code apart from the
launch and results stages, no import cycles, and one job request that survives the trip
through the job folder."""
import ast
import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

from harness.core import layout
from harness.core.request import JobRequest
from harness.core.spec import EXPERIMENTS, load_table
from tests.conftest import harness_cli
from tests.layouts import encoder_shapes, random_state, row_dims

HARNESS = Path(__file__).resolve().parents[1] / 'harness'


def _modules() -> dict[str, Path]:
    found = {}
    for path in HARNESS.rglob('*.py'):
        parts = path.relative_to(HARNESS.parent).with_suffix('').parts
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
            candidates = [target] + [f'{target}.{alias.name}' for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found |= {c for c in candidates if c in modules and c != name}
    return found


def test_job_folder_names_are_spelled_in_the_layout_module_only():
    names = [layout.REQUEST_FILE, layout.STATE_FILE, layout.LOG_FILE, layout.LOCK_FILE,
             layout.CONFIG_FILE, layout.POINTER, layout.CHECKPOINT_STAGING,
             str(layout.CURVES_FILE), layout.PER_CLASS_FILE, *layout.EVAL_DIRS.values(),
             *layout.RELEASED_PROFILES.values(), layout.VIS_DIR]
    for name, path in _modules().items():
        if name == 'harness.layout':
            continue
        text = path.read_text()
        spelled = [n for n in names if n in text]
        assert not spelled, f'{path.relative_to(HARNESS.parent)} spells {spelled}'


def test_runner_code_imports_no_launch_or_results_code_and_there_is_no_cycle():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    for name, deps in graph.items():
        if name.startswith(('harness.runtime', 'harness.models')):
            assert not {d for d in deps if d.startswith(
                ('harness.launch', 'harness.results', 'harness.cli'))}, name

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for dep in graph[todo.pop()]:
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return seen

    # a package's __init__ importing its own modules is no cycle; any other loop is
    cyclic = [n for n in graph if n in reach(n) and not any(
        n == d.rsplit('.', 1)[0] for d in graph[n])]
    assert not cyclic, cyclic


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
                         released=True, amp='bf16', max_iters=7, batch=2, wandb_run_id='r')
    request.write(tmp_path / layout.REQUEST_FILE)
    again = JobRequest.read(tmp_path / layout.REQUEST_FILE)
    assert again == request and again.row.spec_path == spec
    for field in dataclasses.fields(JobRequest):  # every field made the trip, none defaulted
        assert getattr(again, field.name) == getattr(request, field.name), field.name
        assert getattr(request, field.name) != field.default, field.name


@pytest.mark.parametrize('bad, message', [
    (dict(profile='huge'), "unknown profile 'huge'"),
    (dict(amp='int8'), "unknown --amp 'int8'"),
    (dict(gpus=3), '--gpus 3 does not divide the total batch 8'),
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
