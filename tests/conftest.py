import os

import pytest

os.environ['WANDB_MODE'] = 'offline'  # tests never reach a W&B server
os.environ.setdefault('WANDB_SILENT', 'true')
if int(os.environ.get('PYTEST_XDIST_WORKER_COUNT', 1)) > 1:
    # the workers fill the cores already: torch's threads in each would spin against the
    # other worker's (set before any test imports torch; jobs started by tests inherit it)
    os.environ.setdefault('OMP_NUM_THREADS', '1')

# The modules whose real jobs take longest, longest first: `make test` hands whole modules to
# its workers in collection order, so these start first and the workers finish together
LONGEST_FIRST = ['test_result_record.py', 'test_smoke_e2e.py', 'test_recipe_binding.py',
                 'test_rehearse.py', 'test_launchers.py', 'test_bench.py', 'test_damaged_files.py',
                 'test_faults.py', 'test_job_disturbed.py', 'test_mmseg_tools.py', 'test_verify.py',
                 'test_bad_input.py', 'test_evaluate.py', 'test_eval_binding.py',
                 'test_resume_data.py']


def pytest_collection_modifyitems(items):
    rank = {name: k for k, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: else as found


@pytest.fixture(scope='session')
def synthetic_root(tmp_path_factory):
    from harness.assets.synthetic import ensure_dataset
    return ensure_dataset(tmp_path_factory.mktemp('data') / 'ADEChallengeData2016')


@pytest.fixture(scope='session')
def ade_sized_root(tmp_path_factory):
    """The synthetic dataset at ADE20K's image sizes (what rehearsals train on)."""
    from harness.assets.synthetic import ensure_dataset
    return ensure_dataset(tmp_path_factory.mktemp('data-sized') / 'ADEChallengeData2016',
                          size='ade20k')


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
