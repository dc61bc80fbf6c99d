import os
import shutil

import pytest
from filelock import FileLock

os.environ['WANDB_MODE'] = 'offline'  # tests never reach a W&B server
os.environ.setdefault('WANDB_SILENT', 'true')
if int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', 1)) > 1:
    # the workers fill the cores already: torch's threads in each would spin against the
    # other worker's (set before any test imports torch; jobs started by tests inherit it)
    os.environ.setdefault('OMP_NUM_THREADS', '1')

# The modules whose real jobs take longest, longest first (as measured by `--durations`, the
# session's shared jobs counted where they are first asked for): `make test` hands whole
# modules to its workers in collection order, so these start first and the workers finish
# together
LONGEST_FIRST = ['test_smoke_e2e.py', 'test_result_record.py', 'test_rehearse.py',
                 'test_faults.py', 'test_bench.py', 'test_recipe_binding.py',
                 'test_evaluate.py', 'test_launchers.py', 'test_damaged_files.py',
                 'test_bad_input.py', 'test_mmseg_tools.py', 'test_job_disturbed.py',
                 'test_fast_paths.py', 'test_convert.py', 'test_resume_data.py',
                 'test_eval_binding.py', 'test_new_tables.py']


def pytest_collection_modifyitems(items):
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: else as found


@pytest.fixture(scope='session')
def shared_root(tmp_path_factory):
    """A folder the whole test session shares: under xdist, the workers' common temporary root
    (each worker's own is a folder in it); else this process's temporary root."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get('PYTEST_XDIST_WORKER') else base


def made_once(shared_root, name, make):
    """``shared_root / name``, made by ``make(folder)`` the first time any worker asks for it
    (the others wait on its lock, then find it). Whoever uses it must not change it (copy it
    first): other modules, on either worker, read the same folder."""
    folder = shared_root / name
    with FileLock(shared_root / f'{name}.lock'):
        if not (shared_root / f'{name}.made').is_file():
            shutil.rmtree(folder, ignore_errors=True)  # a make that failed half way
            folder.mkdir()
            make(folder)
            (shared_root / f'{name}.made').write_text('')
    return folder


@pytest.fixture(scope='session')
def synthetic_root(shared_root):
    from harness.assets.synthetic import ensure_dataset
    return made_once(shared_root, 'data', lambda folder: ensure_dataset(
        folder / 'ADEChallengeData2016')) / 'ADEChallengeData2016'


@pytest.fixture(scope='session')
def ade_sized_root(shared_root):
    """The synthetic dataset at ADE20K's image sizes (what rehearsals train on)."""
    from harness.assets.synthetic import ensure_dataset
    return made_once(shared_root, 'data-sized', lambda folder: ensure_dataset(
        folder / 'ADEChallengeData2016', size='real')) / 'ADEChallengeData2016'


@pytest.fixture(scope='session')
def finished_job(shared_root, synthetic_root):
    """A finished smoke job of table3's seg-t-16, 20 iterations on ``synthetic_root``, with a
    single-scale evaluation of its checkpoint: trained once for every module that needs just
    such a job (never changed by a test: copy it first). Its work root is ``parents[3]``."""
    from harness.core.layout import RESULT_FILE, job_dir, ours_eval_dirs
    from tests.helpers import harness_cli

    def make(folder):
        jobs = ('--table', 'table3', '--rows', 'seg-t-16', '--profile', 'smoke', '--work-root',
                folder / 'work', '--data-root', synthetic_root, '--no-report')
        ran = harness_cli('run', *jobs, '--max-iters', 20)
        assert ran.returncode == 0, ran.stdout + ran.stderr
        work_dir = job_dir(folder / 'work', 'smoke', 'table3', 'seg-t-16', 0)
        assert (work_dir / RESULT_FILE).is_file() and (work_dir / 'iter_20.pth').is_file()
        evaluated = harness_cli('evaluate', '--ours', *jobs)
        assert evaluated.returncode == 0, evaluated.stdout + evaluated.stderr
        assert len(ours_eval_dirs(work_dir, False)) == 1

    return job_dir(made_once(shared_root, 'finished-job', make) / 'work', 'smoke', 'table3',
                   'seg-t-16', 0)


@pytest.fixture(scope='session')
def report_env(tmp_path_factory):
    """A report-only virtual environment (requirements-report.txt: no torch, mmcv, mmengine or
    mmseg) under another CPython release where the machine has one, built once per session:
    (its interpreter, which release it is and why, the seconds its build took)."""
    import time

    from tests.helpers import build_report_env, other_python
    python, what = other_python()
    start = time.monotonic()
    env_python = build_report_env(tmp_path_factory.mktemp('report-env') / 'venv', python)
    return env_python, what, time.monotonic() - start
