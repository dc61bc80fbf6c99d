"""Bad input, one case per test: one line on stderr starting `error:`, a non-zero exit, and every
file already in the work dir (an earlier job's result) byte-identical afterwards.

The read-only work dir and the full disk are real: a read-only bind mount and a small tmpfs,
each inside a private mount namespace (`tests.helpers.in_namespace`: user + mount namespaces,
so no mount is seen outside the test and none outlives it; root in the container is not needed,
and root's permission bypass does not defeat a read-only mount as it would `chmod 555`).
"""
import json
import sys
from pathlib import Path

import pytest

from harness.core.spec import load_table
from tests.helpers import REPO_ROOT, broken_spec, harness_cli, in_namespace

PREVIOUS_JOB = ('smoke', 'table3', 'seg-t-16', 'seed0')


def _snapshot(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*'))
            if p.is_file()}


@pytest.fixture
def work(tmp_path):
    """(work root, snapshot): a work root holding an earlier job's result."""
    root = tmp_path / 'work'
    job = root.joinpath(*PREVIOUS_JOB)
    (job / 'vis_data').mkdir(parents=True)
    (job / 'job.json').write_text(json.dumps({'status': 'finished', 'row': 'seg-t-16'}))
    (job / 'vis_data' / 'scalars.json').write_text('{"mIoU": 12.5, "step": 100}\n')
    (job / 'iter_100.pth').write_bytes(bytes(range(256)) * 64)
    (job / 'last_checkpoint').write_text(str(job / 'iter_100.pth'))
    return root, _snapshot(root)


def _assert_refused(result, work, needle):
    root, before = work
    assert result.returncode != 0
    assert result.stderr.startswith('error: ') and result.stderr.count('\n') == 1, \
        result.stderr
    assert needle in result.stderr, result.stderr
    assert _snapshot(root) == before


def _run(work, *args):
    return harness_cli('run', *args, '--work-root', work[0], '--no-report')


def test_unknown_table(work):
    _assert_refused(_run(work, '--table', 'table9'), work, "unknown table 'table9'")


def test_unknown_row(work):
    _assert_refused(_run(work, '--table', 'table3', '--rows', 'seg-t-16,seg-x-16'), work,
                    "no row 'seg-x-16'")


def test_malformed_spec(work, tmp_path):
    # the field-by-field cases are in test_spec; here the command refuses and keeps the files
    spec = broken_spec(tmp_path, lambda rows: rows[2].update(decoder='conv'))
    _assert_refused(_run(work, '--table', spec), work, "row 'seg-s-16': field 'decoder'")


def test_row_id_that_cannot_be_a_folder_name(work, tmp_path):
    spec = broken_spec(tmp_path, lambda rows: rows[0].update(id='../seg-t-16'))
    _assert_refused(_run(work, '--table', spec), work,
                    "row '../seg-t-16': field 'id': '../seg-t-16' is not a usable identifier")


def test_config_that_does_not_build(work, tmp_path):
    bad = tmp_path / 'seg-t-16-wrong-type.py'
    bad.write_text(f"_base_ = [{str(REPO_ROOT / 'experiments/configs/table3/seg-t-16.py')!r}]\n"
                   "model = dict(backbone=dict(type='VisionTransformr'))\n")
    spec = broken_spec(tmp_path, lambda rows: rows[0].update(config=str(bad)))
    result = _run(work, '--table', spec, '--rows', 'seg-t-16', '--profile', 'smoke',
                  '--data-root', tmp_path / 'data')
    _assert_refused(result, work, 'table3/seg-t-16: config')
    assert 'does not build: KeyError' in result.stderr and 'VisionTransformr' in result.stderr
    assert not (tmp_path / 'data').exists()  # stopped before anything else


def _ade20k_layout(tmp_path, empty=()):
    """ADE20K's four folders, each with a file of its kind unless named in ``empty`` (the
    checks before a job read no file: names are enough)."""
    data = tmp_path / 'ADEChallengeData2016'
    for kind, suffix in (('images', '.jpg'), ('annotations', '.png')):
        for split, prefix in (('training', 'train'), ('validation', 'val')):
            (data / kind / split).mkdir(parents=True)
            if f'{kind}/{split}' not in empty:
                (data / kind / split / f'ADE_{prefix}_00000001{suffix}').write_bytes(b'')
    return data


@pytest.mark.parametrize('empty', [
    ('images/training', 'annotations/training', 'images/validation', 'annotations/validation'),
    ('annotations/validation',),
])
def test_empty_ade20k_folders(work, tmp_path, empty):
    """The four folders there, some empty: refused before any job, naming each empty one
    (the job would fail 8 s in: `need at least one array to concatenate`)."""
    data = _ade20k_layout(tmp_path, empty)
    result = _run(work, '--table', 'table3', '--rows', 'seg-b-16', '--profile', 'full',
                  '--data-root', data, '--weights-root', tmp_path)
    listed = ', '.join(str(data / folder) for folder in empty)
    _assert_refused(result, work, f'without any file: {listed} (download')


def test_missing_weights(work, tmp_path):
    data = _ade20k_layout(tmp_path)
    result = _run(work, '--table', 'table3', '--rows', 'seg-b-16', '--profile', 'full',
                  '--data-root', data, '--weights-root', tmp_path)
    _assert_refused(result, work, 'pretrained weights missing: weights/vit_base_p16_384.pth')


def test_weights_of_another_backbone(work, tmp_path):
    """A converted Seg-T/16 encoder at Seg-B/16's weights path: refused before any job, where
    mmseg's loading would have skipped every tensor with a warning."""
    from harness.assets.weights import (
        install_row,
        original_name,
        release_shapes,
        write_random_release,
    )
    data = _ade20k_layout(tmp_path)
    tiny, base = (load_table('table3').row(r) for r in ('seg-t-16', 'seg-b-16'))
    tiny_width, base_width = (release_shapes(r)['cls_token'][-1] for r in (tiny, base))
    release = write_random_release(tiny, tmp_path / 'original' / original_name(tiny))
    install_row(tiny, tmp_path, tmp_path / 'original', source=release)
    (tmp_path / base.pretrained_file).write_bytes((tmp_path / tiny.pretrained_file).read_bytes())
    result = _run(work, '--table', 'table3', '--rows', 'seg-b-16', '--profile', 'full',
                  '--data-root', data, '--weights-root', tmp_path)
    _assert_refused(result, work, 'table3/seg-b-16: pretrained weights '
                                  'weights/vit_base_p16_384.pth do not fit the row: not a ViT-B/16')
    # the tiny width found against the base width the row needs
    assert f'has shape (1, 1, {tiny_width}), the row needs (1, 1, {base_width})' in result.stderr


@pytest.mark.parametrize('amp', ['tf32', 'fp16'])
def test_gpu_only_precision_without_a_gpu(work, tmp_path, amp):
    args = ('--table', 'table3', '--rows', 'seg-b-16', '--amp', amp,
            '--data-root', tmp_path / 'no-ade20k')
    # smoke jobs run on CPUs, on any machine
    _assert_refused(_run(work, *args, '--profile', 'smoke'), work, f'--amp {amp} needs')
    # SLURM jobs train on the cluster's GPUs, so the machine that submits them needs none:
    # the next check speaks (no sbatch here, or no ADE20K)
    result = _run(work, *args, '--profile', 'full', '--launcher', 'slurm')
    _assert_refused(result, work, '')
    assert '--amp' not in result.stderr and ('sbatch' in result.stderr
                                              or 'ADE20K not found' in result.stderr)


@pytest.mark.parametrize('option, needle', [
    (('--mem', '12X'), "--mem '12X' is not a SLURM memory size"),
    (('--account', 'my project'), "--account 'my project' is not a SLURM name"),
    (('--poll-interval', '0'), '--poll-interval must be a positive number'),
    (('--time', '1:2:3:4'), "--time '1:2:3:4' is not a SLURM time"),
])
def test_bad_slurm_options(work, tmp_path, option, needle):
    _assert_refused(_run(work, '--table', 'table3', '--rows', 'seg-t-16', '--launcher', 'slurm',
                         *option, '--data-root', tmp_path / 'no-ade20k'), work, needle)


def test_read_only_work_dir(work, tmp_path):
    script = ('set -e; mount --bind "$1" "$1"; mount -o remount,bind,ro "$1"; '
              '"$2" -m harness run --table table3 --rows seg-s-16 --profile smoke '
              '--work-root "$1" --data-root "$3" --no-report')
    result = in_namespace(script, work[0], sys.executable, tmp_path / 'data')
    _assert_refused(result, work, f'cannot write to the work dir {work[0]}: Read-only file system')


def test_work_root_below_a_read_only_folder_is_refused_without_creating_it(tmp_path):
    """A work root not there yet: the nearest folder above it must take files; nothing is
    created to find out."""
    script = ('set -e; mount --bind "$1" "$1"; mount -o remount,bind,ro "$1"; '
              '"$2" -m harness run --table table3 --rows seg-s-16 --profile smoke '
              '--work-root "$1/new/work" --data-root "$3" --no-report')
    parent = tmp_path / 'parent'
    parent.mkdir()
    result = in_namespace(script, parent, sys.executable, tmp_path / 'data')
    assert result.returncode != 0 and result.stderr.count('\n') == 1, result.stderr
    assert result.stderr.startswith(f"error: cannot write to the work dir {parent / 'new/work'}: "
                                    'Read-only file system'), result.stderr
    assert not list(parent.iterdir()) and not (tmp_path / 'data').exists()


def test_data_root_refused_before_anything_is_written(tmp_path):
    """A smoke data root that holds something else than the synthetic dataset is refused
    before the work root (or anything in the data root) is created."""
    data = tmp_path / 'mine'
    data.mkdir()
    (data / 'notes.txt').write_text('not a dataset\n')
    work = tmp_path / 'new' / 'work'
    result = harness_cli('run', '--table', 'table3', '--rows', 'seg-t-16', '--profile', 'smoke',
                         '--work-root', work, '--data-root', data, '--no-report')
    assert result.returncode != 0 and result.stderr.count('\n') == 1, result.stderr
    assert result.stderr.startswith(f'error: {data} exists but is not a complete synthetic '
                                    'dataset'), result.stderr
    assert not (tmp_path / 'new').exists()
    assert [p.name for p in data.iterdir()] == ['notes.txt']


# Run 1 is stopped (SIGTERM, as a scheduler would) once its iteration-20 checkpoint is recorded;
# it saves the iteration it is at on the way out. Its iteration-20 checkpoint is then deleted
# (the stop checkpoint is one of the kept ones, and mmengine removes the oldest kept one before it
# saves the next, which would make room) and the disk filled to leave half a checkpoint free:
# room for the logs of run 2, not for its next checkpoint. Run 2 resumes from run 1's stop
# checkpoint and fails saving iteration 40.
FULL_DISK = r'''
set -e
work=$1; out=$2; py=$3; data=$4
mount -t tmpfs -o size=64m tmpfs "$work"
job="$work/smoke/table3/seg-b-16/seed0"
args=(-m harness run --table table3 --rows seg-b-16 --profile smoke --work-root "$work"
      --data-root "$data" --no-report)
"$py" "${args[@]}" > "$out/run1.out" 2>&1 &
pid=$!
for _ in $(seq 1200); do grep -qs iter_20.pth "$job/last_checkpoint" && break; sleep 0.25; done
kill -TERM $pid; wait $pid || true
grep -qs iter_20.pth "$job/last_checkpoint" || rm "$job/iter_20.pth"
size=$(stat -c %s "$job/$(basename "$(cat "$job/last_checkpoint")")")
avail=$(df --output=avail -B1 "$work" | tail -1)
fallocate -l $((avail - size / 2)) "$work/filler"
cp -a "$job" "$out/before"
"$py" "${args[@]}" > "$out/run2.out" 2> "$out/run2.err" || echo $? > "$out/run2.rc"
cp -a "$job" "$out/after"
'''


@pytest.mark.e2e
def test_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, synthetic_root):
    mountpoint, out = tmp_path / 'disk', tmp_path / 'out'
    mountpoint.mkdir()
    out.mkdir()
    done = in_namespace(FULL_DISK, mountpoint, out, sys.executable, synthetic_root)
    assert done.returncode == 0, done.stderr + (out / 'run1.out').read_text()
    assert int((out / 'run2.rc').read_text()) != 0
    stderr = (out / 'run2.err').read_text()
    assert stderr.startswith('error: table3/seg-b-16 seed0 failed') and stderr.count('\n') == 1
    assert 'no space left on device while saving checkpoint iter_40.pth' in stderr
    before, after = out / 'before', out / 'after'
    kept = Path((before / 'last_checkpoint').read_text()).name  # run 1's stop checkpoint
    assert kept.startswith('iter_') and 20 < int(kept[5:-4]) < 40  # a stop checkpoint
    assert f'the previous checkpoint {kept} is intact' in stderr
    assert (after / kept).read_bytes() == (before / kept).read_bytes()
    assert (after / 'last_checkpoint').read_text() == kept  # a name inside the job folder
    assert not (after / 'iter_40.pth').exists()
    assert not [p for p in after.rglob('*.partial')]  # nothing half-written left behind
    state = json.loads((after / 'job.json').read_text())
    assert state['status'] == 'failed' and 'no space left on device' in state['error']
    assert f'resuming from {kept}' in (out / 'run2.out').read_text()
