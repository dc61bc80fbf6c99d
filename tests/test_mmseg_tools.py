"""A finished job outside the harness: its dumped config runs under mmengine's Runner as mmseg's
own test tool runs it (``tools/test.py``: ``load_from`` the checkpoint; with ``--tta`` the
config's ``tta_pipeline`` and ``tta_model``) and gives the harness's single- and multi-scale
mIoU. The same shortened training (``run --max-iters``) shows the local launcher's progress
lines and is recorded as shortened."""
import json
import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from harness.core.layout import job_dir, latest_checkpoint, ours_eval_dir
from harness.core.profiles import SMOKE
from harness.core.result import read_result
from harness.core.state import read_curves, read_state
from tests.helpers import REPO_ROOT, harness_cli

pytestmark = pytest.mark.e2e
TABLE, ROW = 'table3', 'seg-t-16'
ITERS = 2 * SMOKE.log_interval

# mmseg's tools/test.py, step by step, on a dumped config (PYTHONPATH: the checkout, so that
# the config's custom_imports find the harness's modules)
MMSEG_TEST = r'''
import json, sys
from mmengine.config import Config
from mmengine.runner import Runner
config, checkpoint, work_dir = sys.argv[1:4]
for tta in (False, True):
    cfg = Config.fromfile(config)
    cfg.load_from, cfg.work_dir, cfg.resume = checkpoint, f'{work_dir}-{tta}', False
    cfg.visualizer.vis_backends = [dict(type='LocalVisBackend')]
    if tta:  # what tools/test.py does with --tta
        cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
        cfg.tta_model.module = cfg.model
        cfg.model = cfg.tta_model
    metrics = Runner.from_cfg(cfg).test()
    print(f'METRICS {tta} ' + json.dumps({k: float(v) for k, v in metrics.items()}))
'''


@pytest.fixture(scope='module')
def trained(tmp_path_factory, synthetic_root):
    root = tmp_path_factory.mktemp('tools')
    work, data = root / 'work', root / 'ADEChallengeData2016'
    shutil.copytree(synthetic_root, data)
    for kind in ('images', 'annotations'):  # 3 validation images: the multi-scale
        # evaluations (12 views an image) stay short
        for path in sorted((data / kind / 'validation').iterdir())[3:]:
            path.unlink()
    common = ('--table', TABLE, '--rows', ROW, '--profile', 'smoke', '--work-root', work,
              '--data-root', data, '--reports', root / 'reports')
    run = harness_cli('run', *common, '--max-iters', ITERS)  # and its report
    assert run.returncode == 0, run.stdout + run.stderr
    evaluations = [harness_cli('evaluate', '--ours', *common, '--no-report', *scale) for scale in
                   ([], ['--multi-scale'])]
    for result in evaluations:
        assert result.returncode == 0, result.stdout + result.stderr
    return root, job_dir(work, 'smoke', TABLE, ROW, 0), run


def test_local_training_prints_progress_lines(trained):
    _, work_dir, run = trained
    lines = re.findall(rf'^\[1/1\] {TABLE}/{ROW} seed0: progress: (.*)$', run.stdout, re.M)
    assert len(lines) == ITERS // SMOKE.log_interval, run.stdout
    records = [json.loads(line) for line in
               (work_dir / 'vis_data' / 'scalars.json').read_text().splitlines()]
    # the loss as mmengine logs it (the mean over its window) at the same iteration
    losses = {r['step']: r['loss'] for r in records if 'loss' in r}
    first_val = next(r['mIoU'] for r in records if 'mIoU' in r)
    for k, line in enumerate(lines, 1):
        done = k * SMOKE.log_interval
        assert line.startswith(f'iter {done}/{ITERS} ({100 * done // ITERS}%), loss '), line
        assert float(re.search(r'loss ([\d.]+)', line).group(1)) == \
            pytest.approx(losses[done], abs=1.01e-4)
        # the only evaluation before the end is at SMOKE.first_val (< the first line); the
        # line of the last iteration comes before the final evaluation
        assert f', mIoU {first_val:.2f}' in line
        assert bool(re.search(r', \d+:\d\d:\d\d left$', line)) == (done < ITERS), line
    assert read_state(work_dir)['progress']['iter'] == ITERS


@pytest.fixture(scope='module')
def mmseg_metrics(trained):
    """{multi_scale: test metrics} of the dumped config run as mmseg's test tool runs it
    (one process for both: a start costs more than a test of 3 images)."""
    root, work_dir, _ = trained
    out = subprocess.run(
        [sys.executable, '-c', MMSEG_TEST, work_dir / 'job_config.py',
         latest_checkpoint(work_dir), root / 'mmseg-test'],
        cwd=root, capture_output=True, text=True, timeout=900,
        env={**os.environ, 'PYTHONPATH': str(REPO_ROOT)})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return {found == 'True': json.loads(metrics)
            for found, metrics in re.findall(r'^METRICS (\w+) (.*)$', out.stdout, re.M)}


@pytest.mark.parametrize('multi_scale', [False, True], ids=['single-scale', 'multi-scale'])
def test_dumped_config_under_mmseg_test_tool_gives_the_harness_miou(trained, mmseg_metrics,
                                                                    multi_scale):
    _, work_dir, _ = trained
    sha = read_result(work_dir)['checkpoint']['sha256']  # the evaluation of its final checkpoint
    harness = read_state(ours_eval_dir(work_dir, multi_scale, sha))['metrics']
    metrics = mmseg_metrics[multi_scale]
    for key in ('mIoU', 'mAcc', 'aAcc'):
        assert metrics[key] == pytest.approx(harness[key], abs=1e-6), key
    if multi_scale:  # and multi-scale is not single-scale under another name
        single = mmseg_metrics[False]
        assert (metrics['mIoU'], metrics['aAcc']) != (single['mIoU'], single['aAcc'])


def test_shortened_job_is_recorded_and_gets_no_verdict(trained):
    """``run --max-iters N``: N iterations, the decay ending at N, an evaluation at N; the job
    records the request and the report marks the row shortened instead of judging it."""
    root, work_dir, _ = trained
    table, row, n, reports = TABLE, ROW, ITERS, root / 'reports'
    assert n % SMOKE.log_interval == 0  # logged at its last iteration
    assert read_state(work_dir)['meta']['request']['max_iters'] == n
    train, val = read_curves(work_dir)
    assert train.index.max() == n and list(val.index) == [SMOKE.first_val, n]
    # the poly decay ends at n: the lr logged at the last iteration (after its scheduler step)
    # is the closed form's at n, the floor, far below the full smoke schedule's there
    from mmengine.config import Config
    cfg = Config.fromfile(work_dir / 'job_config.py')
    decay, lr = cfg.param_scheduler[0], cfg.optim_wrapper.optimizer.lr

    def poly(end):
        return (lr - decay.eta_min) * (1 - n / end) ** decay.power + decay.eta_min
    assert train['lr'].iloc[-1] == pytest.approx(poly(n), rel=1e-3)
    assert poly(n) < poly(SMOKE.max_iters) / 5
    results = pd.read_csv(reports / 'smoke' / table / 'results.csv').set_index('row')
    assert results.loc[row, 'verdict'] == f'shortened ({n} iterations)'
    report = (reports / 'smoke' / table / 'report.md').read_text()
    assert f'| shortened ({n} iterations) |' in report
