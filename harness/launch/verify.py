"""``verify``: is each job folder still what its record says it ran? Recomputes the recipe
fingerprint from the frozen config, each recorded checkpoint's SHA-256, the weights' and the
dataset's (its file list; its files' sizes and times against the contents ``check-data`` kept,
or with ``contents`` every byte again), checks that the current spec still builds the frozen
recipe, and checks the result record against the files it summarises. It fails closed: a record
that is missing or cannot be read is a difference, never a check skipped.

``record`` (:func:`record_missing`): the result record of a job that finished before jobs wrote
one, written only after the folder passed those checks."""
from __future__ import annotations

import functools
import warnings
from pathlib import Path

from ..core.hashing import sha256_file
from ..core.layout import (
    DATA_CONTENTS_FILE,
    FROZEN_CONFIG,
    REQUEST_FILE,
    RESULT_FILE,
    STATE_FILE,
    job_dir,
    ours_eval_dirs,
    own_checkpoints,
    released_dirs,
    seed_dirs,
)
from ..core.request import JobRequest
from ..core.result import read_result, write_result
from ..core.spec import Row
from ..core.state import UNREADABLE, read_recipe, read_state

MADE_AFTER = 'record command, after the job'  # a record's made_by when `record` wrote it


def job_folders(rows: list[Row], profile: str, work_root: Path) -> list[Path]:
    """Every job folder of ``rows`` on disk: the training jobs, every evaluation of their
    checkpoints at both scales, and every evaluation of the rows' released checkpoints."""
    found = []
    for row in rows:
        for seed in seed_dirs(work_root, profile, row.folder, row.id):
            trained = job_dir(work_root, profile, row.folder, row.id, seed)
            found.append(trained)
            for multi_scale in (False, True):
                found += ours_eval_dirs(trained, multi_scale)
        for multi_scale in (False, True):
            found += released_dirs(work_root, row.folder, row.id, multi_scale)
    return found


def _hashes():
    """Each file's SHA-256 read from its bytes (never the cache), once per check."""
    return functools.cache(lambda path: sha256_file(path, cache=None))


def _state_problems(work_dir: Path, state: dict) -> list[str]:
    """What keeps the job state from vouching for the folder: no state file, or one that does
    not parse (then its checkpoints, inputs and dataset cannot be checked)."""
    if not (work_dir / STATE_FILE).is_file():
        return [f'no {STATE_FILE}: the checkpoints, inputs and dataset it records cannot be '
                'checked']
    if state.get('status') == UNREADABLE:
        return [f"{state.get('error')}: the checkpoints, inputs and dataset it records cannot "
                'be checked']
    return []


def _checkpoint_problems(work_dir: Path, state: dict, sha) -> list[str]:
    """Every checkpoint recorded at save against its bytes, and every checkpoint of the folder
    that has no SHA-256 on record."""
    problems = []
    recorded = state.get('checkpoints') or {}
    for name, entry in recorded.items():
        path = work_dir / name
        if not path.is_file():
            problems.append(f'checkpoint {name} is missing')
        elif not (entry or {}).get('sha256'):
            problems.append(f'checkpoint {name} has no SHA-256 on record in {STATE_FILE}')
        elif sha(path) != entry['sha256']:
            problems.append(f'checkpoint {name}: SHA-256 differs from the one recorded at save')
    problems += [f'checkpoint {name} has no SHA-256 on record in {STATE_FILE}'
                 for name in (p.name for p in reversed(own_checkpoints(work_dir)))
                 if name not in recorded]
    return problems


def contents_rehash():
    """A dataset's contents digest from every file's bytes (``verify --contents``), hashed
    once per dataset root in one check however many job folders read it."""
    from ..assets.contents import contents_digest, hash_all
    return functools.cache(lambda root: contents_digest(hash_all(root)))


def dataset_problems(root: Path, recorded: dict, rehash=None) -> list[str]:
    """The dataset at ``root`` against the identity a job recorded: its file list; then, when
    the job recorded a contents digest, each file's size and time against the contents file
    kept beside the data (whose digest must be the job's), or with ``rehash`` (a
    :func:`contents_rehash`) every file's bytes hashed again against the job's digest."""
    from ..assets.contents import NOT_HASHED, read_contents, stat_differences
    from .provenance import dataset_identity
    where = f'dataset at {root}'
    if dataset_identity(root)['file_list_sha256'] != recorded.get('file_list_sha256'):
        return [f'{where}: file list differs from the one the job read']
    digest = recorded.get('contents_sha256')
    if digest is None:
        why = recorded.get('contents') or NOT_HASHED
        return ([f'{where}: the job recorded no contents digest ({why} before it started), so '
                 'its contents cannot be compared']
                if rehash is not None else [])  # the file list is all there is on record
    if rehash is not None:
        return ([] if rehash(root) == digest else
                [f'{where}: contents differ from the ones the job read (every file hashed '
                 'again)'])
    kept = read_contents(root)
    if kept is None:
        return [f'{where}: no readable {DATA_CONTENTS_FILE} to compare sizes and times with '
                '(`verify --contents` hashes every file again)']
    if kept['contents_sha256'] != digest:
        return [f"{where}: the contents check-data keeps ({kept['contents_sha256'][:16]}) are "
                f'not the ones the job read ({digest[:16]})']
    changed = stat_differences(root, kept)
    if changed:
        return [f'{where}: {len(changed)} file(s) changed since they were hashed (size or '
                f'time), the first: {changed[0]}']
    return []


def _input_problems(request: JobRequest, state: dict, sha, rehash=None) -> list[str]:
    """The pretrained weights, the checkpoint evaluated and the dataset (file list, and
    contents quickly or with ``rehash`` every byte) against what the job read."""
    problems = []
    inputs = (state.get('meta') or {}).get('inputs') or {}
    for kind, entry in inputs.items():
        path = (Path(request.weights_root) / entry['file'] if kind == 'pretrained'
                else Path(entry['file']))
        if entry.get('sha256') is None:
            continue
        if not path.is_file():
            problems.append(f'{kind} file {path} is missing')
        elif sha(path) != entry['sha256']:
            problems.append(f'{kind} file {path}: SHA-256 differs from the one the job loaded')
    dataset = (state.get('meta') or {}).get('dataset')
    if dataset and request.data_root is not None:
        problems += dataset_problems(Path(request.data_root), dataset, rehash)
    return problems


def _recipe_problems(work_dir: Path, request: JobRequest, recipe: dict) -> list[str]:
    """The frozen config against the recorded fingerprint, and what the current spec builds."""
    # mmengine imports pkg_resources, whose deprecation notice is no finding of verify's
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)
    from mmengine.config import Config

    from ..prepare.fingerprint import differences, fingerprint, recipe_view
    from ..prepare.job_config import build_config
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
    return problems


def result_problems(work_dir: Path, recipe: dict, state: dict, sha) -> list[str]:
    """The result record against the folder: there when the job finished, readable, the files
    it summarises unchanged, its checkpoint there with the same SHA-256, its recipe the
    folder's."""
    try:
        record = read_result(work_dir)
    except Exception as err:  # noqa: BLE001 - StateError naming the file, or a disk's error
        return [str(err).splitlines()[0] if str(err) else type(err).__name__]
    if record is None:
        return ([f'no result record ({RESULT_FILE}) though the job finished (`python -m '
                 'harness record` writes one after checking the folder)']
                if state.get('status') == 'finished' else [])
    return record_problems(work_dir, record, recipe, sha)


def record_problems(work_dir: Path, record: dict, recipe: dict, sha) -> list[str]:
    """What differs between a result record and the folder it summarises."""
    problems = []
    for name, expected in (record.get('files') or {}).items():
        path = work_dir / name
        if not path.is_file():
            problems.append(f'{name}, summarised by {RESULT_FILE}, is missing')
        elif sha(path) != expected:
            problems.append(f'{name}: SHA-256 differs from the one {RESULT_FILE} summarises')
    checkpoint = record.get('checkpoint') or {}
    if not checkpoint.get('file') or not checkpoint.get('sha256'):
        problems.append(f'{RESULT_FILE} names no checkpoint with its SHA-256')
    else:
        path = work_dir / checkpoint['file']  # a training's own checkpoint, or an absolute path
        if not path.is_file():
            problems.append(f"checkpoint {checkpoint['file']} of {RESULT_FILE} is missing")
        elif sha(path) != checkpoint['sha256']:
            problems.append(f"checkpoint {checkpoint['file']}: SHA-256 differs from the one "
                            f'{RESULT_FILE} records')
    fingerprint = (record.get('recipe') or {}).get('fingerprint')
    if fingerprint != recipe['fingerprint']:
        problems.append(f"{RESULT_FILE} records recipe {fingerprint}, the folder's is "
                        f"{recipe['fingerprint']}")
    return problems


def check_folder(work_dir: Path, sha, rehash=None) -> tuple[dict | None, list[str]]:
    """The job's frozen recipe, and what differs between the folder and its recipe, job state
    (checkpoints, inputs, dataset: with ``rehash`` its contents byte by byte) and the current
    spec; the result record is not looked at."""
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return None, ['no such folder']
    recipe = read_recipe(work_dir)
    if recipe is None:
        return None, ['no frozen recipe (the job never started, or started before jobs kept one)']
    request = JobRequest.read(work_dir / REQUEST_FILE)
    state = read_state(work_dir)
    problems = _recipe_problems(work_dir, request, recipe)
    unread = _state_problems(work_dir, state)
    if unread:
        return recipe, problems + unread
    problems += _checkpoint_problems(work_dir, state, sha)
    problems += _input_problems(request, state, sha, rehash)
    return recipe, problems


def check_job(work_dir: Path, rehash=None) -> tuple[str | None, list[str]]:
    """The job's recorded recipe fingerprint, and what differs between the folder and its
    record (empty: all of it verified)."""
    sha = _hashes()
    recipe, problems = check_folder(work_dir, sha, rehash)
    if recipe is None:
        return None, problems
    # an unreadable state is a difference already; the record is still checked
    problems += result_problems(Path(work_dir), recipe, read_state(work_dir), sha)
    return recipe['fingerprint'], problems


def _one_line(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else ''
    return f'{type(err).__name__}: {text}'


def verify(folders: list[Path], contents: bool = False) -> int:
    """One line per job folder; the number of folders that differ from their record.
    ``contents``: every dataset file's bytes hashed again (once per dataset), not only its size
    and time compared."""
    differing, rehash = 0, contents_rehash() if contents else None
    for folder in folders:
        try:
            recipe, problems = check_job(folder, rehash)
        except Exception as err:  # noqa: BLE001 - one line for a folder that cannot be read
            problems = [_one_line(err)]
        if problems:
            differing += 1
            print(f'DIFFERS {folder}: ' + '; '.join(problems), flush=True)
        else:
            print(f'ok      {folder} (recipe {recipe})', flush=True)
    return differing


def _record_one(folder: Path) -> tuple[str, str]:
    """(outcome, line) of writing one folder's missing result record; outcome is one of
    written, kept, skipped, differs."""
    from .job_records import result_record
    folder = Path(folder)
    if (folder / RESULT_FILE).exists():
        return 'kept', f'kept    {folder}: it has a result record (never rewritten)'
    state = read_state(folder)
    if state.get('status') == UNREADABLE:
        return 'differs', f"DIFFERS {folder}: {state.get('error')}; no record written"
    if state.get('status') != 'finished':
        return 'skipped', (f"skipped {folder}: not finished (status "
                           f"{state.get('status', 'not run')}), so no record")
    sha = _hashes()  # each file hashed once, for the folder's checks and the record's
    recipe, problems = check_folder(folder, sha)
    if problems:
        return 'differs', f'DIFFERS {folder}: ' + '; '.join(problems) + '; no record written'
    request = JobRequest.read(folder / REQUEST_FILE)
    metrics = state.get('metrics') if request.kind == 'evaluate' else None
    record = result_record(request, folder, recipe, state, metrics, made_by=MADE_AFTER)
    unsound = record_problems(folder, record, recipe, sha)
    if unsound:  # never a record that verify would refuse
        return 'differs', (f'DIFFERS {folder}: the record it would get does not hold ('
                           + '; '.join(unsound) + '); no record written')
    path = write_result(folder, record)
    return 'written', f'wrote   {path} (recipe {recipe["fingerprint"]}, {MADE_AFTER})'


def record_missing(folders: list[Path]) -> dict[str, int]:
    """``record``: for each finished job folder without a result record, the record, once the
    folder passed verify's checks; one line per folder. Nothing else in a folder is written,
    and an existing record never is. Returns how many folders had each outcome."""
    counts = {'written': 0, 'kept': 0, 'skipped': 0, 'differs': 0}
    for folder in folders:
        try:
            outcome, line = _record_one(folder)
        except Exception as err:  # noqa: BLE001 - one line for a folder that cannot be read
            outcome, line = 'differs', f'DIFFERS {folder}: {_one_line(err)}; no record written'
        counts[outcome] += 1
        print(line, flush=True)
    return counts
