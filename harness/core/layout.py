"""The checkout, the work root and the job folder: every name a job's files go by, in one place.

Every stage reads or writes the job folder (the launcher creates it, the job process and the
code inside mmengine's Runner write it, the results stage reads it), so this module sits in the
core and imports nothing of the harness; reading and writing what the files hold is
:mod:`harness.core.state`. The folder's tree, each file with its role, is in
docs/tracking-and-reports.md ("The job folder").
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WORK_ROOT = REPO_ROOT / 'work_dirs'
DEFAULT_REPORTS = REPO_ROOT / 'reports'
REHEARSALS = DEFAULT_REPORTS / 'rehearsal'  # the committed measurements `plan` reads
BENCH = DEFAULT_REPORTS / 'bench'
REHEARSAL_WORK_ROOT = DEFAULT_WORK_ROOT / 'rehearsal'
OFFICIAL_CHECKPOINTS = REPO_ROOT / 'checkpoints' / 'official'  # the converted releases

REQUEST_FILE = 'request.json'
STATE_FILE = 'job.json'
LOG_FILE = 'job.log'
LOCK_FILE = '.lock'
CONFIG_FILE = 'job_config.py'  # this start's resolved config
RECIPE_FILE = 'recipe.json'  # the recipe frozen at the first start: fingerprints, row, request
FROZEN_CONFIG = 'recipe_config.py'  # the effective config of the first start
POINTER = 'last_checkpoint'  # mmengine's name: its resume reads it
CHECKPOINT_STAGING = '.checkpoint-staging'  # same filesystem as the job, so a rename is atomic
VIS_DIR = 'vis_data'  # mmengine's LocalVisBackend writes here under the visualizer's save_dir
CURVES_FILE = Path(VIS_DIR) / 'scalars.json'
WANDB_DIR = Path(VIS_DIR) / 'wandb'
PER_CLASS_FILE = 'per_class_iou.json'
RESULT_FILE = 'result.json'  # the result record: written once, never rewritten
SLURM_DIR = 'slurm'
# kept in a dataset's root (ADEChallengeData2016/): each file's size, time and SHA-256 and
# one digest of them all, written by `check-data` (and by the synthetic dataset's generator)
DATA_CONTENTS_FILE = '.harness-contents.json'
EVAL_DIRS = {False: 'eval-single-scale', True: 'eval-multi-scale'}
RELEASED_PROFILES = {False: 'released-ss', True: 'released-ms'}


def shown(path: Path) -> str:
    """A path as lines and records show it: relative to the checkout when inside it."""
    path = Path(path)
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def job_dir(work_root: Path, profile: str, table: str, row: str, seed: int) -> Path:
    return Path(work_root) / profile / table / row / f'seed{seed}'


def seed_dirs(work_root: Path, profile: str, table: str, row: str) -> list[int]:
    """The seeds of a row that have a job folder, in order."""
    base = Path(work_root) / profile / table / row
    return sorted(int(p.name[4:]) for p in base.glob('seed*') if p.name[4:].isdigit())


SHA_DIGITS = 16  # of a checkpoint's SHA-256, naming the folder of its evaluation


def ours_eval_dir(trained: Path, multi_scale: bool, sha256: str) -> Path:
    """Where the evaluation of a trained job's checkpoint with that SHA-256 lives (inside the
    training's folder): another checkpoint is another evaluation, and the first one stays."""
    return Path(trained) / EVAL_DIRS[multi_scale] / sha256[:SHA_DIGITS]


def ours_eval_dirs(trained: Path, multi_scale: bool) -> list[Path]:
    """Every evaluation folder of a trained job at one scale (older harness versions kept
    one evaluation directly in ``eval-*-scale/``: that folder itself)."""
    base = Path(trained) / EVAL_DIRS[multi_scale]
    legacy = [base] if (base / STATE_FILE).is_file() else []
    # a later evaluation of such a job lies inside that folder, beside the old one's files
    return legacy + sorted(p for p in base.glob('?' * SHA_DIGITS) if p.is_dir()
                           and all(c in '0123456789abcdef' for c in p.name))


def released_base(work_root: Path, table_folder: str, row: str, multi_scale: bool) -> Path:
    return Path(work_root) / RELEASED_PROFILES[multi_scale] / table_folder / row


def released_dir(work_root: Path, table_folder: str, row: str, multi_scale: bool,
                 sha256: str) -> Path:
    """Where the evaluation of a row's released checkpoint with that SHA-256 lives
    (``table_folder``: the spec's own folder, :attr:`Row.folder`)."""
    return released_base(work_root, table_folder, row, multi_scale) / sha256[:SHA_DIGITS]


def released_dirs(work_root: Path, table_folder: str, row: str, multi_scale: bool) -> list[Path]:
    """Every evaluation folder of a row's released checkpoints at one scale (older harness
    versions kept one in ``seed0/``)."""
    base = released_base(work_root, table_folder, row, multi_scale)
    return sorted(p for p in base.glob('*') if p.is_dir())


def wandb_run_globs(work_root: Path) -> list[str]:
    """Shell patterns of every offline W&B run folder under a work root (training jobs,
    evaluations of ours and of released checkpoints)."""
    root, run = Path(work_root), Path(WANDB_DIR) / 'offline-run-*'
    return [str(root / '*' / '*' / '*' / 'seed*' / run),
            str(root / '*' / '*' / '*' / 'seed*' / 'eval-*' / '*' / run),
            str(root / 'released-*' / '*' / '*' / '*' / run)]


def checkpoint_name(iteration: int) -> str:
    return f'iter_{iteration}.pth'


def checkpoint_iteration(path: Path) -> int | None:
    """N of a checkpoint named ``iter_<N>.pth``, else None."""
    name = Path(path).name
    digits = name[len('iter_'):-len('.pth')]
    if name.startswith('iter_') and name.endswith('.pth') and digits.isdigit():
        return int(digits)
    return None


def own_checkpoints(work_dir: Path) -> list[Path]:
    """The job folder's own checkpoints, newest first (a restart resumes from the newest
    intact one: :func:`harness.launch.job_records.resume_point`)."""
    found = (p for p in Path(work_dir).glob('iter_*.pth') if checkpoint_iteration(p) is not None)
    return sorted(found, key=checkpoint_iteration, reverse=True)


def latest_checkpoint(work_dir: Path) -> Path | None:
    """The checkpoint mmengine would resume from, or None before the first one."""
    pointer = Path(work_dir) / POINTER
    if not pointer.is_file():
        return None
    # a name in this folder (older pointers hold an absolute path: its name, here)
    return Path(work_dir) / Path(pointer.read_text().strip()).name


def slurm_folder(work_dirs: list[Path]) -> Path:
    """submitit's folder of one submission (a job array: its script, pickles and every task's
    logs): ``slurm/`` in the folder that holds all of its job folders."""
    return Path(os.path.commonpath([str(Path(d)) for d in work_dirs])) / SLURM_DIR


def slurm_log(folder: Path, slurm_job_id: str, task: int = 0) -> Path:
    """submitit's stderr file of one task (process) of a SLURM job (``<array>_<index>`` in an
    array), in the submission's ``slurm_folder``."""
    return Path(folder) / f'{slurm_job_id}_{task}_log.err'
