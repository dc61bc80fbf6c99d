"""`verify` fails closed (a job state, checkpoint hash or result record missing or unreadable
is a difference), checks each result record against the files it summarises and visits every
evaluation folder; `record` writes the record of a job that finished before records existed,
once, and only for a folder that passes verify's checks. One real smoke job through the CLI,
copied for each test that changes it."""
import json
import os
import shutil

import pytest

from harness.core.hashing import sha256_file
from harness.core.layout import (
    EVAL_DIRS,
    PER_CLASS_FILE,
    RECIPE_FILE,
    RESULT_FILE,
    STATE_FILE,
    job_dir,
    ours_eval_dir,
    ours_eval_dirs,
    released_dir,
    released_base,
)
from harness.core.spec import load_table
from harness.launch.verify import MADE_AFTER, check_job, job_folders
from tests.helpers import harness_cli

pytestmark = pytest.mark.e2e

ROW = 'seg-t-16'


@pytest.fixture(scope='module')
def finished(finished_job):
    """A finished smoke job of 20 iterations with a single-scale evaluation of its checkpoint
    (the session's, never changed by a test: copy it first)."""
    assert finished_job.name == 'seed0' and finished_job.parent.name == ROW
    return finished_job


def _copy(finished, tmp_path):
    return shutil.copytree(finished, tmp_path / 'job')


def _verify(folder):
    return harness_cli('verify', '--job', folder)


def _differs(done, *phrases):
    """verify's or record's output says DIFFERS with every one of ``phrases``, exit 1."""
    assert done.returncode == 1, done.stdout + done.stderr
    line = next((line for line in done.stdout.splitlines() if line.startswith('DIFFERS')), '')
    assert line, done.stdout
    for phrase in phrases:
        assert phrase in line, line
    return line


def _files(folder):
    """Every file of a folder with its SHA-256 and modification time."""
    return {str(p.relative_to(folder)): (sha256_file(p, cache=None), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob('*')) if p.is_file()}


def test_a_finished_job_verifies_with_nothing_on_stderr(finished):
    done = harness_cli('verify', '--job', finished, fresh=True)  # the start-up warnings too
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith(f'ok      {finished}') and '1 of 1' in done.stdout
    assert 'pkg_resources' not in done.stderr and 'Warning' not in done.stderr, done.stderr


def test_verify_checks_the_evaluations_of_a_row(finished):
    evaluation = ours_eval_dirs(finished, False)[0]
    done = harness_cli('verify', '--table', 'table3', '--rows', ROW, '--work-root',
                       finished.parents[3])
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line.split(' (recipe')[0] for line in lines[:-1]] == \
        [f'ok      {finished}', f'ok      {evaluation}'] and '2 of 2' in lines[-1], lines


def test_an_unparsable_or_missing_job_state_differs(finished, tmp_path):
    job = _copy(finished, tmp_path)
    (job / STATE_FILE).write_text('{"status": "finished", ')  # cut short
    _differs(_verify(job), 'unreadable state', 'cannot be checked')
    (job / STATE_FILE).unlink()
    _differs(_verify(job), f'no {STATE_FILE}', 'cannot be checked')


def test_a_checkpoint_without_a_recorded_hash_differs(finished, tmp_path):
    job = _copy(finished, tmp_path)
    (job / 'iter_30.pth').write_bytes(os.urandom(4096))
    line = _differs(_verify(job), f'checkpoint iter_30.pth has no SHA-256 on record in '
                                  f'{STATE_FILE}')
    assert 'iter_20.pth' not in line  # the recorded one still verifies


def test_the_result_record_is_checked_against_the_files_it_summarises(finished, tmp_path):
    job = _copy(finished, tmp_path)
    record = json.loads((job / RESULT_FILE).read_text())
    assert PER_CLASS_FILE in record['files'], record['files']
    per_class = job / PER_CLASS_FILE
    original = per_class.read_bytes()
    per_class.write_bytes(original.replace(b'{', b'{ ', 1))  # same numbers, other bytes
    _differs(_verify(job), f'{PER_CLASS_FILE}: SHA-256 differs from the one {RESULT_FILE} '
                           'summarises')
    per_class.write_bytes(original)
    assert _verify(job).returncode == 0

    # the rest through the stage function (the command line is the one above)
    def differs(*phrases):
        _, problems = check_job(job)
        assert problems and all(any(p in line for line in problems) for p in phrases), problems

    (job / RESULT_FILE).write_text(json.dumps({**record, 'checkpoint': {
        **record['checkpoint'], 'sha256': '0' * 64}}))
    differs('checkpoint iter_20.pth: SHA-256 differs from the one '
            f'{RESULT_FILE} records')
    (job / RESULT_FILE).write_text(json.dumps({**record, 'recipe': {
        **record['recipe'], 'fingerprint': 'f' * 16}}))
    differs(f"{RESULT_FILE} records recipe {'f' * 16}")
    (job / RESULT_FILE).write_text('{"format": 1, ')
    differs('unreadable result record')
    (job / RESULT_FILE).unlink()
    differs(f'no result record ({RESULT_FILE}) though the job finished')


def test_verify_of_a_folder_that_does_not_exist_is_one_line(tmp_path):
    for command in ('verify', 'record'):
        done = harness_cli(command, '--job', tmp_path / 'nonexistent')
        assert done.returncode == 2 and not done.stdout, done.stdout
        assert done.stderr.splitlines() == \
            [f"error: --job {tmp_path / 'nonexistent'}: no such folder"], done.stderr


def test_verify_visits_every_evaluation_folder(tmp_path):
    """Evaluations of ours at both scales (one per checkpoint, and the older single folder)
    and of released checkpoints (one per file, and the older seed0/)."""
    work = tmp_path / 'work'
    row = load_table('table3').row(ROW)
    trained = job_dir(work, 'smoke', row.folder, ROW, 0)
    expected = [trained, ours_eval_dir(trained, False, 'a' * 64),
                ours_eval_dir(trained, False, 'b' * 64), trained / EVAL_DIRS[True],
                released_dir(work, row.folder, ROW, False, 'c' * 64),
                released_base(work, row.folder, ROW, True) / 'seed0']
    for folder in expected:
        folder.mkdir(parents=True)
    (trained / EVAL_DIRS[True] / STATE_FILE).write_text('{}')  # the older layout
    assert job_folders([row], 'smoke', work) == expected
    done = harness_cli('verify', '--table', 'table3', '--rows', ROW, '--work-root', work)
    assert done.returncode == 1
    assert [line.split(':')[0] for line in done.stdout.splitlines()[:-1]] == \
        [f'DIFFERS {folder}' for folder in expected]
    assert f'0 of {len(expected)} job folder(s) verified' in done.stdout


def _as_before_records(job, aside):
    """The folder as a job that finished before records existed left it: no result record,
    no seed-free fingerprint, code identity nor inputs in its recipe."""
    shutil.move(job / RESULT_FILE, aside)
    recipe = json.loads((job / RECIPE_FILE).read_text())
    for key in ('seed_free', 'code', 'inputs'):
        recipe.pop(key, None)
    (job / RECIPE_FILE).write_text(json.dumps(recipe, indent=1))
    return json.loads(aside.read_text())


def test_record_writes_the_missing_record_once(finished, tmp_path):
    job = _copy(finished, tmp_path)
    original = _as_before_records(job, tmp_path / 'result-by-the-job.json')
    before = _files(job)
    done = harness_cli('record', '--job', job, fresh=True)  # the start-up warnings too
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f'wrote   {job / RESULT_FILE}') and len(lines) == 2, lines
    assert 'pkg_resources' not in done.stderr, done.stderr
    after = _files(job)
    assert after.pop(RESULT_FILE) and after == before  # nothing else written
    record = json.loads((job / RESULT_FILE).read_text())
    assert record['made_by'] == MADE_AFTER and original['made_by'] == 'job'
    for key in ('kind', 'job', 'iteration', 'metrics', 'checkpoint', 'recipe', 'files'):
        assert record[key] == original[key], key
    assert record['code'] is None
    assert _verify(job).returncode == 0

    written = (job / RESULT_FILE).read_bytes()
    again = harness_cli('record', '--job', job)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.startswith(f'kept    {job}')
    assert (job / RESULT_FILE).read_bytes() == written


def test_record_writes_nothing_for_a_job_that_differs(finished, tmp_path):
    job = _copy(finished, tmp_path)
    _as_before_records(job, tmp_path / 'result-by-the-job.json')
    checkpoint = job / 'iter_20.pth'
    data = bytearray(checkpoint.read_bytes())
    data[len(data) // 2] ^= 0xFF
    checkpoint.write_bytes(bytes(data))
    before = _files(job)
    done = harness_cli('record', '--job', job)
    line = _differs(done, 'checkpoint iter_20.pth: SHA-256 differs from the one recorded at '
                          'save', 'no record written')
    assert len([x for x in done.stdout.splitlines() if x.startswith('DIFFERS')]) == 1, line
    assert not (job / RESULT_FILE).exists() and _files(job) == before


def test_record_writes_the_missing_record_of_an_evaluation(finished, tmp_path):
    job = shutil.copytree(ours_eval_dirs(finished, False)[0], tmp_path / 'evaluation')
    original = _as_before_records(job, tmp_path / 'result-by-the-job.json')
    done = harness_cli('record', '--job', job)
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads((job / RESULT_FILE).read_text())
    assert record['made_by'] == MADE_AFTER
    for key in ('kind', 'job', 'metrics', 'checkpoint', 'recipe', 'files'):
        assert record[key] == original[key], key
    assert _verify(job).returncode == 0


def test_verify_contents_reads_every_byte_of_the_dataset_the_job_read(finished, tmp_path,
                                                                      synthetic_root):
    """The job's data (a copy, times kept) with one image changed in place at the same name,
    size and time: the quick check cannot tell, ``verify --contents`` does."""
    job, data = _copy(finished, tmp_path), tmp_path / 'data'
    shutil.copytree(synthetic_root, data)
    request = json.loads((job / 'request.json').read_text())
    (job / 'request.json').write_text(json.dumps({**request, 'data_root': str(data)}))
    image = next((data / 'images' / 'validation').iterdir())
    stat = image.stat()
    raw = bytearray(image.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    image.write_bytes(bytes(raw))
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert _verify(job).returncode == 0
    _differs(harness_cli('verify', '--job', job, '--contents'),
             'contents differ from the ones the job read')
