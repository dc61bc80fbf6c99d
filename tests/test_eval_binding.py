"""An evaluation of one of our checkpoints is bound to its training: it evaluates the checkpoint
the training's result record names, checked by its bytes before anything is launched, with the
recipe frozen at the training's first start (not the row's config as the checkout has it now),
in a folder named by the checkpoint's SHA-256. Real jobs through the CLI, one training shared."""
import json

import pytest
import yaml

from harness.core.layout import (
    CONFIG_FILE,
    FROZEN_CONFIG,
    REQUEST_FILE,
    RESULT_FILE,
    job_dir,
    ours_eval_dir,
    ours_eval_dirs,
)
from harness.core.errors import StateError
from harness.core.request import JobRequest
from harness.core.result import read_result
from harness.core.spec import EXPERIMENTS, load_table
from harness.core.state import read_state
from tests.helpers import harness_cli

ROW = 'seg-t-16'
EDIT = 'model = dict(backbone=dict(drop_path_rate=0.3), test_cfg=dict(slide_batch=3))\n'


@pytest.fixture(scope='module')
def trained(tmp_path_factory, synthetic_root):
    """A smoke job of 20 iterations of a spec given by path whose row's config is a file the
    tests may edit (it inherits the real one): (spec, that config, work root, job folder)."""
    root = tmp_path_factory.mktemp('eval-binding')
    config = root / f'{ROW}.py'
    config.write_text(f"_base_ = [{str(EXPERIMENTS / 'configs' / 'table3' / f'{ROW}.py')!r}]\n")
    data = yaml.safe_load((EXPERIMENTS / 'table3.yaml').read_text())
    next(r for r in data['rows'] if r['id'] == ROW)['config'] = str(config)
    spec = root / 'mine.yaml'
    spec.write_text(yaml.safe_dump(data, allow_unicode=True))
    work = root / 'work'
    ran = harness_cli('run', '--table', spec, '--rows', ROW, '--profile', 'smoke',
                      '--work-root', work, '--data-root', synthetic_root, '--no-report',
                      '--max-iters', 20)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    work_dir = job_dir(work, 'smoke', load_table(spec).row(ROW).folder, ROW, 0)
    assert read_result(work_dir)['checkpoint']['file'] == 'iter_20.pth'
    return spec, config, work, work_dir


def _evaluate(spec, work, data, *extra):
    return harness_cli('evaluate', '--ours', '--table', spec, '--rows', ROW, '--profile',
                       'smoke', '--work-root', work, '--data-root', data, '--no-report', *extra)


@pytest.mark.e2e
def test_our_checkpoint_is_evaluated_with_the_recipe_it_trained_with(trained, synthetic_root):
    from mmengine.config import Config
    spec, config, work, work_dir = trained
    frozen = Config.fromfile(work_dir / FROZEN_CONFIG)
    original = config.read_text()
    config.write_text(original + EDIT)  # the row's config edited after the training
    try:
        edited = Config.fromfile(config)
        assert (edited.model.backbone.drop_path_rate, edited.model.test_cfg.slide_batch) == \
            (0.3, 3)
        result = _evaluate(spec, work, synthetic_root)
    finally:
        config.write_text(original)
    assert result.returncode == 0, result.stdout + result.stderr
    sha = read_result(work_dir)['checkpoint']['sha256']
    folder = ours_eval_dir(work_dir, False, sha)
    assert ours_eval_dirs(work_dir, False) == [folder]
    assert read_state(folder)['status'] == 'finished'
    evaluated = Config.fromfile(folder / CONFIG_FILE)
    # the frozen values, not the edited ones
    assert evaluated.model.backbone.drop_path_rate == frozen.model.backbone.drop_path_rate != 0.3
    assert evaluated.model.test_cfg.slide_batch == frozen.model.test_cfg.slide_batch != 3
    assert evaluated.model.backbone.embed_dims == frozen.model.backbone.embed_dims
    assert evaluated.model.pretrained is None
    assert evaluated.test_dataloader.dataset.data_root == str(synthetic_root)  # this machine's
    request = json.loads((folder / REQUEST_FILE).read_text())
    assert request['checkpoint'] == str(work_dir / 'iter_20.pth')
    assert request['checkpoint_sha256'] == sha
    again = _evaluate(spec, work, synthetic_root)  # that checkpoint is evaluated once
    assert again.returncode == 0 and 'finished before, skipped' in again.stdout, again.stdout


@pytest.mark.e2e
def test_a_replaced_checkpoint_is_refused_in_one_line_and_nothing_is_evaluated(
        trained, synthetic_root):
    spec, _, work, work_dir = trained
    checkpoint = work_dir / read_result(work_dir)['checkpoint']['file']
    original = checkpoint.read_bytes()
    replaced = bytearray(original)
    replaced[len(replaced) // 2] ^= 0xFF  # one byte
    checkpoint.write_bytes(bytes(replaced))
    try:
        refused = _evaluate(spec, work, synthetic_root, '--multi-scale')
    finally:
        checkpoint.write_bytes(original)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    errors = [line for line in refused.stderr.splitlines() if 'error' in line.lower()]
    assert len(errors) == 1, refused.stderr
    assert errors[0].startswith(f'error: [1/1] table3/{ROW} seed0: {checkpoint} is not the '
                                'checkpoint its result record names'), errors[0]
    assert errors[0].endswith('not evaluated')
    assert 'evaluating' not in refused.stdout
    # the closing advice names what to do about it, and the same command is the way back
    assert refused.stdout.splitlines()[-1].startswith('1 job(s) not evaluated: the checkpoint '
                                                      'or result record'), refused.stdout
    assert ours_eval_dirs(work_dir, True) == []


@pytest.mark.e2e
def test_a_training_without_a_readable_result_record_is_not_evaluated(trained, synthetic_root):
    spec, _, work, work_dir = trained
    record = work_dir / RESULT_FILE
    original = record.read_bytes()
    before = ours_eval_dirs(work_dir, True)
    try:
        record.unlink()
        missing = _evaluate(spec, work, synthetic_root, '--multi-scale')
        record.write_text('{"format": 1')
        unreadable = _evaluate(spec, work, synthetic_root, '--multi-scale')
    finally:
        record.write_bytes(original)
    assert missing.returncode == 0, missing.stdout + missing.stderr
    assert f'[1/1] table3/{ROW} seed0: no result record (make one with python -m harness ' \
           f'record --job {work_dir}), skipped' in missing.stdout.splitlines()
    assert unreadable.returncode == 1
    errors = [line for line in unreadable.stderr.splitlines() if 'error' in line.lower()]
    assert len(errors) == 1 and f'unreadable result record ({record})' in errors[0], errors
    assert unreadable.stdout.splitlines()[-1].startswith('1 job(s) not evaluated'), \
        unreadable.stdout
    assert ours_eval_dirs(work_dir, True) == before


def test_an_evaluation_of_ours_without_the_frozen_config_is_one_line(tmp_path):
    from harness.prepare.job_config import build_config
    row = load_table('table3').row(ROW)
    request = JobRequest(row=row, profile='smoke', seed=0, work_dir=tmp_path / 'eval',
                         data_root=tmp_path / 'data', checkpoint=tmp_path / 'iter_20.pth')
    with pytest.raises(StateError) as err:
        build_config(request)
    assert str(tmp_path / FROZEN_CONFIG) in str(err.value) and '\n' not in str(err.value)
