"""A dataset's contents, not only its file list: `check-data` hashes every file once and keeps
the hashes beside the data, a job's dataset identity takes the digest from there, and verify's
dataset check compares sizes and times quickly or every byte with `--contents`. So an image
changed in place, under the same name and at the same size, no longer verifies. Real files,
in-process (the small copy has the synthetic dataset's counts, given to check-data here)."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from harness.assets.contents import NOT_HASHED, contents_path, read_contents
from harness.assets.synthetic import SPLITS
from harness.cli import main
from harness.core.datasets import datasets
from harness.launch.provenance import dataset_identity
from harness.launch.job_records import _input_differences
from harness.launch.verify import contents_rehash, dataset_problems
from tests.helpers import REPO_ROOT, with_counts

SMALL_COUNTS = {split: count for split, (_, count) in SPLITS.items()}
IMAGE = 'images/validation/ADE_val_00000003.jpg'


@pytest.fixture
def copy(tmp_path, synthetic_root, monkeypatch):
    """A copy of the synthetic dataset (times kept), and check-data expecting its counts."""
    monkeypatch.setitem(datasets(), 'ade20k', with_counts(datasets()['ade20k'], SMALL_COUNTS))
    root = tmp_path / 'ADEChallengeData2016'
    shutil.copytree(synthetic_root, root)
    return root


def _check_data(root, *flags, capsys=None):
    code = main(['check-data', '--data-root', str(root), '--workers', '2', *flags])
    out = capsys.readouterr() if capsys else None
    return code, out


def _change_in_place(root, keep_time=False):
    """One byte of an image's JFIF header (its pixel density): the same name, the same size,
    an image that decodes as before, other bytes."""
    path = root / IMAGE
    stat, data = path.stat(), bytearray(path.read_bytes())
    assert data[6:11] == b'JFIF\0'
    data[15] ^= 0x01  # the low byte of the horizontal density
    path.write_bytes(bytes(data))
    if keep_time:  # as a copy that keeps times would (cp -p, rsync -t)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size


def test_check_data_keeps_the_contents_and_an_image_changed_in_place_changes_them(copy, capsys):
    generated = dataset_identity(copy)  # the synthetic dataset comes hashed
    assert len(generated['contents_sha256']) == 64
    assert generated['contents'] == 'hashed by the synthetic dataset generator'
    contents_path(copy).unlink()
    unhashed = dataset_identity(copy)
    assert unhashed['contents_sha256'] is None and unhashed['contents'] == NOT_HASHED
    assert unhashed['file_list_sha256'] == generated['file_list_sha256']

    code, out = _check_data(copy, capsys=capsys)
    assert code == 0, out.err
    kept = json.loads(contents_path(copy).read_text())
    assert len(kept['files']) == 2 * sum(SMALL_COUNTS.values())
    assert set(kept['files'][IMAGE]) == {'size', 'mtime_ns', 'sha256'}
    assert f"contents {kept['contents_sha256'][:16]} of 112 files kept in" in out.out
    hashed = dataset_identity(copy)
    assert hashed['contents_sha256'] == generated['contents_sha256']  # the same bytes
    assert hashed['contents'] == 'hashed by check-data'

    _change_in_place(copy)  # a new time: the contents on file no longer vouch for it
    changed = dataset_identity(copy)
    assert changed['contents_sha256'] is None
    assert changed['contents'].startswith(f'{NOT_HASHED} again (1 file(s) changed')
    assert IMAGE in changed['contents']
    assert _check_data(copy, capsys=capsys)[0] == 0
    again = dataset_identity(copy)
    assert again['file_list_sha256'] == hashed['file_list_sha256']  # the same names
    assert len(again['contents_sha256']) == 64
    assert again['contents_sha256'] != hashed['contents_sha256']


def test_layout_only_writes_nothing(copy, capsys):
    contents_path(copy).unlink()
    code, out = _check_data(copy, '--layout-only', capsys=capsys)
    assert code == 0, out.err
    assert not contents_path(copy).exists() and 'contents' not in out.out


def test_a_dataset_root_that_takes_no_file_is_one_line_and_the_check_passes(copy):
    """A real read-only bind mount of the dataset (in fresh user + mount namespaces, where root's
    permission bypass does not defeat it as it would ``chmod``), check-data run there."""
    contents_path(copy).unlink()
    program = ('import sys; from harness.core.datasets import datasets; '
               'from tests.helpers import with_counts; '
               f"datasets()['ade20k'] = with_counts(datasets()['ade20k'], {SMALL_COUNTS!r}); "
               'from harness.cli import main; '
               "sys.exit(main(['check-data', '--data-root', sys.argv[1], '--workers', '2']))")
    script = ('set -e; mount --bind "$1" "$1"; mount -o remount,bind,ro "$1"; '
              f'exec "{sys.executable}" -c "$2" "$1"')
    out = subprocess.run(['unshare', '--user', '--map-root-user', '--mount', 'bash', '-c', script,
                          'ns', str(copy), program], capture_output=True, text=True, timeout=600,
                         env={**os.environ, 'PYTHONPATH': str(REPO_ROOT)})
    assert out.returncode == 0 and 'Traceback' not in out.stderr, out.stdout + out.stderr
    said = [line for line in out.stdout.splitlines() if 'not kept' in line]
    assert len(said) == 1 and f'{copy} takes no file (Read-only file system)' in said[0]
    assert not contents_path(copy).exists()
    assert dataset_identity(copy)['contents_sha256'] is None


def test_verify_compares_times_quickly_and_every_byte_with_contents(copy, capsys):
    recorded = dataset_identity(copy)  # what a job started now records
    assert dataset_problems(copy, recorded) == []
    assert dataset_problems(copy, recorded, contents_rehash()) == []

    _change_in_place(copy, keep_time=True)  # same name, size and time: only the bytes tell
    assert dataset_problems(copy, recorded) == []
    found = dataset_problems(copy, recorded, contents_rehash())
    assert len(found) == 1 and 'contents differ from the ones the job read' in found[0]

    os.utime(copy / IMAGE)  # now with a new time too
    found = dataset_problems(copy, recorded)
    assert len(found) == 1 and '1 file(s) changed since they were hashed' in found[0]
    assert IMAGE in found[0]

    assert _check_data(copy, capsys=capsys)[0] == 0  # hashed again: other contents on file
    found = dataset_problems(copy, recorded)
    assert len(found) == 1 and 'are not the ones the job read' in found[0]

    contents_path(copy).unlink()
    found = dataset_problems(copy, recorded)
    assert len(found) == 1 and 'no readable .harness-contents.json' in found[0]
    assert len(dataset_problems(copy, recorded, contents_rehash())) == 1


def test_a_job_that_recorded_no_contents_is_checked_by_its_file_list(copy):
    contents_path(copy).unlink()
    recorded = dataset_identity(copy)
    _change_in_place(copy)
    assert dataset_problems(copy, recorded) == []  # all there is on record: the file list
    found = dataset_problems(copy, recorded, contents_rehash())
    assert len(found) == 1 and 'the job recorded no contents digest' in found[0]
    (copy / IMAGE).unlink()
    assert 'file list differs' in dataset_problems(copy, recorded)[0]


def test_a_contents_file_that_does_not_add_up_is_none(copy):
    body = json.loads(contents_path(copy).read_text())
    body['files'][IMAGE]['sha256'] = '0' * 64  # its digest is no longer its files'
    contents_path(copy).write_text(json.dumps(body))
    assert read_contents(copy) is None
    assert dataset_identity(copy)['contents_sha256'] is None


def test_a_restart_on_other_contents_is_named():
    first = {'file_list_sha256': 'a' * 64, 'contents_sha256': 'b' * 64, 'root': 'data'}
    same_list = {**first, 'contents_sha256': 'c' * 64}
    found = _input_differences({'dataset': first}, {'dataset': same_list})
    assert found == [f"dataset at data (other contents than at the first start: {'b' * 16}, "
                     f"now {'c' * 16})"]
    unhashed = {**first, 'contents_sha256': None}
    assert _input_differences({'dataset': first}, {'dataset': unhashed}) == []
