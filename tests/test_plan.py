"""`harness plan`: a dry run whose numbers come from the jobs' configs and the records on disk,
and which launches nothing and writes nothing."""
import json
import os
import re
import subprocess

import pytest
import yaml
from mmseg.registry import MODELS
from mmseg.utils import register_all_modules

from harness.core.request import JobRequest
from harness.core.spec import EXPERIMENTS, load_table
from harness.measure.rehearsal_result import (PeakMemory, RehearsalMachine, RehearsalRun,
                                              RowFailure, RowRehearsal, Substitutions,
                                              load_rehearsals, markdown, write_rehearsal)
from harness.prepare.job_config import build_config
from tests.helpers import REPO_ROOT, harness_cli


def _tree(root):
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob('*'))}


def _git_status():
    return subprocess.run(['git', 'status', '--porcelain'], cwd=REPO_ROOT, capture_output=True,
                          text=True, check=True).stdout


def _job_block(stdout, row, seed):
    match = re.search(rf'^  {row} seed{seed}: .*?(?=^  \S|^total)', stdout, re.DOTALL | re.MULTILINE)
    assert match, stdout
    return match.group(0)


def test_plan_of_real_rows_from_their_configs_writes_nothing(tmp_path):
    row = load_table('table3').row('seg-t-16')
    # a spec speed for one row; a logged job for another; the third has neither
    data = yaml.safe_load((EXPERIMENTS / 'table3.yaml').read_text())
    for r in data['rows']:
        if r['id'] == 'seg-s-16':
            r['speed'] = {'seconds_per_iter': 0.9, 'gpus': 1, 'gpu': 'V100',
                          'source': 'test record'}
    spec = tmp_path / 'spec' / 'table3.yaml'
    spec.parent.mkdir()
    spec.write_text(yaml.safe_dump(data, allow_unicode=True))
    work, weights = tmp_path / 'work', tmp_path / 'weights-root'
    # a spec given by path keeps its jobs in a table folder of its own
    logged = work / 'full' / load_table(spec).row('seg-t-16').folder / 'seg-t-16' / 'seed1'
    (logged / 'vis_data').mkdir(parents=True)
    (logged / 'job.json').write_text(json.dumps({'status': 'interrupted', 'gpus': 2}))
    (logged / 'vis_data' / 'scalars.json').write_text(''.join(
        json.dumps({'loss': 1.0, 'time': t, 'step': s}) + '\n'
        for s, t in ((50, 0.4), (100, 0.6))))
    (weights / row.pretrained_file).parent.mkdir(parents=True)
    (weights / row.pretrained_file).write_bytes(b'converted')
    before, status = _tree(tmp_path), _git_status()

    result = harness_cli('plan', '--table', spec, '--rows', 'seg-t-16,seg-s-16,seg-b-8',
                         '--gpus', '2', '--seeds', '2', '--launcher', 'torchrun',
                         '--work-root', work, '--weights-root', weights,
                         '--data-root', tmp_path / 'no-ade', '--rehearsals', tmp_path / 'none')
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert _tree(tmp_path) == before and _git_status() == status  # nothing written
    assert 'data: MISSING' in out

    register_all_modules()
    cfg = build_config(JobRequest(row=row, profile='full', seed=0, work_dir=work,
                                  data_root=tmp_path, gpus=2))
    cfg.model.pretrained = None
    params = sum(p.numel() for p in MODELS.build(cfg.model).parameters())
    t16 = _job_block(out, 'seg-t-16', 0)
    assert 'experiments/configs/table3/seg-t-16.py' in t16
    assert 'torchrun --nproc_per_node 2, GPUs 2, batch/GPU 4, iterations 160000' in t16
    # 2 kept checkpoints of weights + SGD momentum, fp32, plus the log allowance
    disk = (2 * params * 4 * 2 + 100 * 2 ** 20) / 2 ** 30
    assert f'disk {disk:.2f} GB: 2 checkpoints' in t16 and f'{params} params' in t16
    assert f'weights present ({row.pretrained_file})' in t16
    # speed from the logged job (mean 0.5 s/iteration on 2 GPUs): 0.5 x 2 x 160000 / 3600
    assert 'GPU-hours 44.4, wall-clock hours 22.2 (logged by' in t16
    assert 'job interrupted' in _job_block(out, 'seg-t-16', 1)
    assert 'GPU-hours 40.0, wall-clock hours 40.0 (spec: 0.9 s/iteration on 1 x V100' in \
        _job_block(out, 'seg-s-16', 0)
    b8 = _job_block(out, 'seg-b-8', 1)
    assert 'GPU-hours unknown' in b8 and 'needs a user-supplied file' in b8
    assert 'no rehearsal on a GPU yet (make rehearse)' in b8
    total = out.strip().splitlines()[-1]
    assert total.startswith('total: 6 job(s), 168.9 GPU-hours + unknown for 2 job(s)')
    assert 'weights/vit_base_p8_384.pth, weights/vit_small_p16_384.pth' in total


def test_smoke_plan_and_bad_gpu_count():
    result = harness_cli('plan', '--table', 'table6', '--rows', 'seg-t-mask-16',
                         '--profile', 'smoke')
    assert result.returncode == 0, result.stderr
    assert 'batch/GPU 8, iterations 100' in result.stdout
    assert 'weights not used (random init)' in result.stdout
    bad = harness_cli('plan', '--table', 'table3', '--gpus', '3')
    assert bad.returncode == 2 and bad.stderr == 'error: --gpus 3 does not divide the total ' \
        'batch 8 (ADE20K)\n'


def _rehearsed(batch, step, per_image, per_worker=1.0):
    """A row's rehearsal with the figures plan reads; the others are placeholders."""
    return RowRehearsal(batch=batch, real_batch=8, iters=2, crop=512, weights='test',
                        weights_loaded='test', train_s_per_iter=step, train_data_s_per_iter=None,
                        train_first_iter_s=step, eval_s_per_image=per_image, eval_images=None,
                        eval_windows=None, peak_memory=PeakMemory(bytes=1, kind='test'),
                        checkpoint_bytes=1, checkpoint_save_s=None, loss=None, train_dir='test',
                        images_per_s_per_worker=per_worker, samples=1, workers=1, wall_s=1.0)


def _rehearsal_record(folder, kind, rows):
    """A rehearsal result as `harness rehearse` files it: device kind -> precision -> rows."""
    write_rehearsal(RehearsalRun(
        device=kind, precision='fp32', date='2026-12-01 10:00', command='test',
        machine=RehearsalMachine(cpu='test', cpu_count=1, torch_threads=1, versions={}),
        substitutions=Substitutions(data='test', weights='test', iterations=2, batch=8),
        rows=rows), folder)


def test_plan_hours_from_a_rehearsal_of_the_same_device_kind(tmp_path):
    """GPU-hours = iterations x s/iteration x GPUs + evaluations x 2,000 images x s/image;
    wall-clock = iterations x s/iteration + the evaluations split among the GPUs. Only a
    rehearsal at the job's per-GPU batch on the asked device kind counts."""
    step, per_image = 0.37, 0.052
    kind = 'cuda: Test GPU'
    _rehearsal_record(tmp_path / 'r', kind, {
        'table6/seg-t-mask-16': _rehearsed(4, step, per_image),
        'table6/seg-s-mask-16': _rehearsed(8, step, per_image),
        'table6/seg-b-mask-16': RowFailure(error='CUDA out of memory', batch=8)})
    result = harness_cli('plan', '--table', 'table6', '--rows',
                         'seg-t-mask-16,seg-s-mask-16,seg-b-mask-16', '--gpus', 2,
                         '--rehearsals', tmp_path / 'r', '--work-root', tmp_path / 'w')
    assert result.returncode == 0, result.stderr
    out = result.stdout
    cfg = build_config(JobRequest(row=load_table('table6').row('seg-t-mask-16'), profile='full',
                                  seed=0, work_dir=None, data_root=None, gpus=2))
    iters, interval = cfg.train_cfg.max_iters, cfg.train_cfg.val_interval
    evals = -(-iters // interval)
    gpu_hours = (iters * step * 2 + evals * 2000 * per_image) / 3600
    wall = (iters * step + evals * 2000 * per_image / 2) / 3600
    t = _job_block(out, 'seg-t-mask-16', 0)
    assert f'GPU-hours {gpu_hours:.1f}, wall-clock hours {wall:.1f} (rehearsal on {kind}' in t
    assert f'{evals} evaluations' in t
    assert "at batch 8, not the job's 4 per GPU" in _job_block(out, 'seg-s-mask-16', 0)
    assert 'GPU-hours unknown' in _job_block(out, 'seg-b-mask-16', 0)
    assert f'table6 total: GPU-hours {gpu_hours:.1f} + unknown for 2 job(s)' in out
    # another device kind's rehearsal says nothing about this one
    other = harness_cli('plan', '--table', 'table6', '--rows', 'seg-t-mask-16', '--gpus', 2,
                        '--rehearsals', tmp_path / 'r', '--work-root', tmp_path / 'w',
                        '--device', 'cuda: Other GPU')
    assert 'GPU-hours unknown' in other.stdout and 'no rehearsal on cuda: Other GPU' in other.stdout


@pytest.mark.parametrize('cpus', [1, 4])
def test_plan_says_when_a_row_would_be_data_bound(tmp_path, cpus):
    """The loader workers come from the allocation (here SLURM's CPUs per task); the rehearsed
    pipeline delivers ``per_worker`` images/s each, the step consumes batch / step_s."""
    batch, step, per_worker = 8, 0.5, 5.0  # the step consumes 16 images/s
    kind = 'cuda: Test GPU'
    _rehearsal_record(tmp_path / 'r', kind, {
        'table6/seg-t-mask-16': _rehearsed(batch, step, 0.05, per_worker)})
    result = harness_cli('plan', '--table', 'table6', '--rows', 'seg-t-mask-16',
                         '--rehearsals', tmp_path / 'r', '--work-root', tmp_path / 'w',
                         env={**os.environ, 'SLURM_CPUS_PER_TASK': str(cpus)})
    assert result.returncode == 0, result.stderr
    line = next(x for x in _job_block(result.stdout, 'seg-t-mask-16', 0).splitlines()
                if x.strip().startswith('data '))
    assert f'{cpus} loader worker(s) per process (SLURM_CPUS_PER_TASK={cpus} here)' in line
    bound = cpus * per_worker < batch / step
    assert ('DATA-BOUND' in line) == bound and ('keeps up' in line) != bound
    assert f'{cpus} x {per_worker:.1f} images/s against {batch / step:.1f}' in line


def _committed(folder, tmp_path):
    """A copy of the committed files of ``folder`` (as HEAD has them: `make rehearse` rewrites
    the ones in the checkout), in ``tmp_path``."""
    copy = tmp_path / folder.name
    copy.mkdir()
    listed = subprocess.run(['git', 'ls-tree', '--name-only', 'HEAD',
                             f'{folder.relative_to(REPO_ROOT)}/'],
                            cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    for path in listed.split():
        (copy / os.path.basename(path)).write_bytes(subprocess.run(
            ['git', 'show', f'HEAD:{path}'], cwd=REPO_ROOT, capture_output=True,
            check=True).stdout)
    return copy


def test_plan_takes_hours_from_the_rehearsals_on_record(tmp_path):
    """reports/rehearsal holds the project's rehearsals in the current format: plan reads them
    as they are, and their report renders from them unchanged. Read as committed, so that a
    `make rehearse` (which rewrites them) leaves the test as it was."""
    reports = _committed(REPO_ROOT / 'reports' / 'rehearsal', tmp_path)
    assert sorted(p.name for p in reports.iterdir()) == ['rehearsal.json', 'rehearsal.md']
    on_record = load_rehearsals(reports)
    assert markdown(on_record) == (reports / 'rehearsal.md').read_text()
    entry = on_record['cpu']['fp32'].rows['table3/seg-t-16']
    result = harness_cli('plan', '--table', 'table3', '--rows', 'seg-t-16', '--gpus', 8,
                         '--device', 'cpu', '--work-root', tmp_path / 'work',
                         '--rehearsals', reports)
    assert result.returncode == 0 and 'note: ' not in result.stderr, result.stderr
    evals = 160000 // 16000
    hours = (160000 * entry.train_s_per_iter * 8 + evals * 2000 * entry.eval_s_per_image) / 3600
    assert f'GPU-hours {hours:.1f}, wall-clock hours' in result.stdout
    assert 'rehearsal on cpu, 2026-12-02 15:24' in result.stdout


# what `rehearse` filed before its results were versioned records: no format, no machine
OLDER_FORMAT = {'cuda: Test GPU': {'fp32': {'date': '2026-11-01 10:00', 'rows': {
    'table6/seg-t-mask-16': {'batch': 4, 'train_s_per_iter': 0.37, 'eval_s_per_image': 0.05}}}}}


def test_a_rehearsal_of_an_older_format_is_measured_again_not_rendered(tmp_path):
    folder = tmp_path / 'r'
    folder.mkdir()
    (folder / 'rehearsal.json').write_text(json.dumps(OLDER_FORMAT))
    result = harness_cli('plan', '--table', 'table6', '--rows', 'seg-t-mask-16', '--gpus', 2,
                         '--rehearsals', folder, '--work-root', tmp_path / 'w')
    assert result.returncode == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if line.startswith('note: ')]
    assert notes == [f"note: {folder / 'rehearsal.json'} cuda: Test GPU fp32: measured in an "
                     'older format: run `make rehearse` again'], result.stderr
    t = _job_block(result.stdout, 'seg-t-mask-16', 0)
    assert 'GPU-hours unknown' in t and 'no rehearsal on a GPU yet (make rehearse)' in t
    # the next rehearsal files its own run; the older one is neither kept nor rendered
    _rehearsal_record(folder, 'cpu', {'table6/seg-t-mask-16': _rehearsed(4, 0.5, 0.1)})
    assert list(load_rehearsals(folder)) == ['cpu']
    saved = json.loads((folder / 'rehearsal.json').read_text())
    assert list(saved) == ['cpu'] and saved['cpu']['fp32']['format'] == 1
    md = (folder / 'rehearsal.md').read_text()
    assert 'Test GPU' not in md and '| table6/seg-t-mask-16 | 4 | 0.50 |' in md
