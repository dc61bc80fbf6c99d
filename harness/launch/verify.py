"""``verify``: is each job folder still what its record says it ran? Recomputes the recipe
fingerprint from the frozen config, each recorded checkpoint's SHA-256, the weights' and the
dataset's, and checks that the current spec still builds the frozen recipe."""
from __future__ import annotations

from pathlib import Path

from ..core.hashing import sha256_file
from ..core.layout import EVAL_DIRS, FROZEN_CONFIG, REQUEST_FILE, job_dir, seed_dirs
from ..core.request import JobRequest
from ..core.spec import Row
from ..core.state import read_recipe, read_state


def job_folders(rows: list[Row], profile: str, work_root: Path) -> list[Path]:
    """Every job folder of ``rows`` on disk: the training jobs and their evaluations."""
    found = []
    for row in rows:
        for seed in seed_dirs(work_root, profile, row.folder, row.id):
            trained = job_dir(work_root, profile, row.folder, row.id, seed)
            found.append(trained)
            found += [trained / name for name in EVAL_DIRS.values() if (trained / name).is_dir()]
    return found


def check_job(work_dir: Path) -> tuple[str | None, list[str]]:
    """The job's recorded recipe fingerprint, and what differs between the folder and its
    record (empty: all of it verified)."""
    from mmengine.config import Config

    from ..prepare.fingerprint import differences, fingerprint, recipe_view
    from ..prepare.job_config import build_config
    from .provenance import dataset_identity
    work_dir = Path(work_dir)
    recipe = read_recipe(work_dir)
    if recipe is None:
        return None, ['no frozen recipe (the job never started, or started before jobs kept one)']
    request = JobRequest.read(work_dir / REQUEST_FILE)
    problems = []
    frozen = recipe_view(Config.fromfile(work_dir / FROZEN_CONFIG), request.weights_root,
                         request.gpus)
    if fingerprint(frozen) != recipe['fingerprint']:
        problems.append(f"frozen config {FROZEN_CONFIG} is not the recipe recorded "
                        f"({fingerprint(frozen)} != {recipe['fingerprint']})")
    current = recipe_view(build_config(request), request.weights_root, request.gpus)
    if fingerprint(current) != recipe['fingerprint']:
        keys = differences(recipe['view'], current)
        problems.append(f"the current spec builds another recipe ({fingerprint(current)} != "
                        f"{recipe['fingerprint']}: {', '.join(keys[:3])})")
    state = read_state(work_dir)
    for name, entry in (state.get('checkpoints') or {}).items():
        path = work_dir / name
        if not path.is_file():
            problems.append(f'checkpoint {name} is missing')
        elif sha256_file(path, cache=None) != entry['sha256']:
            problems.append(f'checkpoint {name}: SHA-256 differs from the one recorded at save')
    inputs = (state.get('meta') or {}).get('inputs') or {}
    for kind, entry in inputs.items():
        path = (Path(request.weights_root) / entry['file'] if kind == 'pretrained'
                else Path(entry['file']))
        if entry.get('sha256') is None:
            continue
        if not path.is_file():
            problems.append(f'{kind} file {path} is missing')
        elif sha256_file(path, cache=None) != entry['sha256']:
            problems.append(f'{kind} file {path}: SHA-256 differs from the one the job loaded')
    dataset = (state.get('meta') or {}).get('dataset')
    if dataset and request.data_root is not None:
        now = dataset_identity(request.data_root)
        if now['file_list_sha256'] != dataset['file_list_sha256']:
            problems.append(f'dataset at {request.data_root}: file list differs from the one '
                            'the job read')
    return recipe['fingerprint'], problems


def verify(folders: list[Path], log=print) -> int:
    """One line per job folder; the number of folders that differ from their record."""
    differing = 0
    for folder in folders:
        try:
            recipe, problems = check_job(folder)
        except Exception as err:  # noqa: BLE001 - one line for a folder that cannot be read
            problems = [f'{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ""}']
        if problems:
            differing += 1
            log(f'DIFFERS {folder}: ' + '; '.join(problems), flush=True)
        else:
            log(f'ok      {folder} (recipe {recipe})', flush=True)
    return differing

