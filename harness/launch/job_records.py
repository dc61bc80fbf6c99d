"""What binds a job's numbers to what produced them, kept in its folder by the job process:
the recipe frozen at the first start (effective config, row, request, fingerprints), one history
entry appended per start, the inputs' SHA-256, and the checkpoint a restart resumes from."""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import time
from pathlib import Path

from ..core.atomic import atomic_write
from ..core.errors import DriftError, StateError
from ..core.hashing import sha256_file
from ..core.layout import (
    CURVES_FILE,
    FROZEN_CONFIG,
    PER_CLASS_FILE,
    POINTER,
    RECIPE_FILE,
    checkpoint_iteration,
    latest_checkpoint,
    own_checkpoints,
)
from ..core.request import JobRequest
from ..core.result import seed_free_fingerprint
from ..core.sources import SOURCES_FORMAT, code_differences, code_identity, recipe_sources
from ..core.spec import table_arg
from ..core.state import NOTICE_PREFIX, read_curves, read_per_class, read_recipe, read_state

SHOWN_KEYS = 3  # differing keys named in the line that refuses a drifted restart


def _rebase(frozen, now):
    """``frozen`` with the values that belong to this machine and start (data roots, loader
    workers) taken from ``now`` wherever both have them."""
    from ..prepare.fingerprint import MACHINE_KEYS
    if isinstance(frozen, dict) and isinstance(now, dict):
        merged = {k: _rebase(v, now.get(k)) for k, v in frozen.items()}
        merged.update({k: now[k] for k in MACHINE_KEYS if k in now})
        return merged
    if isinstance(frozen, list) and isinstance(now, list) and len(frozen) == len(now):
        return [_rebase(f, n) for f, n in zip(frozen, now)]
    return frozen


def _input_differences(frozen: dict | None, now: dict) -> list[str]:
    """The inputs of this start that are not the first start's (the pretrained file, the
    checkpoint evaluated, the dataset's file list and, when both starts had it hashed, its
    contents), each named."""
    if not frozen:  # frozen before records kept them: nothing to compare with
        return []
    found = []
    for kind, entry in (frozen.get('files') or {}).items():
        current = (now.get('files') or {}).get(kind) or {}
        if entry.get('sha256') != current.get('sha256'):
            found.append(f"{kind} {entry.get('file')} (SHA-256 {str(entry.get('sha256'))[:16]} "
                         f"at the first start, now {str(current.get('sha256'))[:16]})")
    was, is_ = frozen.get('dataset') or {}, now.get('dataset') or {}
    if was and is_ and was.get('file_list_sha256') != is_.get('file_list_sha256'):
        found.append(f"dataset at {is_.get('root')} (another file list than at the first start)")
    elif was.get('contents_sha256') and is_.get('contents_sha256') and (
            was['contents_sha256'] != is_['contents_sha256']):  # both hashed: compared
        found.append(f"dataset at {is_.get('root')} (other contents than at the first start: "
                     f"{was['contents_sha256'][:16]}, now {is_['contents_sha256'][:16]})")
    return found


def _shown(items: list[str]) -> str:
    return ', '.join(items[:SHOWN_KEYS]) + (f' and {len(items) - SHOWN_KEYS} more'
                                            if len(items) > SHOWN_KEYS else '')


def freeze_or_check(request: JobRequest, cfg, work_dir: Path, write: bool = True):
    """At the first start, freeze ``cfg``'s recipe, the code identity and the inputs into the
    job folder; at a restart, return the frozen recipe's config (with this start's paths and
    the total batch shared by this start's processes) and refuse, with one line naming what
    differs (config keys, code files, packages, inputs), when this start is not the first
    one's, unless the request accepts the drift. Returns (config, frozen record, drift, this
    start's code identity and inputs), so the job records them without computing them again."""
    from mmengine.config import Config

    from ..prepare.fingerprint import RECIPE_KEYS, differences, fingerprint, recipe_view
    from .provenance import package_versions
    view = recipe_view(cfg, request.weights_root, request.gpus)
    now = fingerprint(view)
    code = code_identity(request.row, package_versions())
    inputs = _inputs(request)
    now_start = {'code': code, 'inputs': inputs}
    frozen = read_recipe(work_dir)
    if frozen is None:
        # it ran before (checkpoints, starts on record): never re-frozen, what trained is gone
        if own_checkpoints(work_dir) or read_state(work_dir).get('history'):
            raise StateError(
                f'{request.name}: {Path(work_dir) / RECIPE_FILE} is missing beside the '
                "job's checkpoints and history: what it trained with is unknown; restore the "
                'file, or start the job afresh in another work root')
        record = {'fingerprint': now, 'seed_free': seed_free_fingerprint(view),
                  'sources': recipe_sources(request.row), 'sources_format': SOURCES_FORMAT,
                  'code': code, 'inputs': inputs,
                  'view': view, 'row': dataclasses.asdict(request.row),
                  'request': request.to_json(), 'frozen': time.time()}
        if write:  # else another process of the job freezes it
            cfg.dump(Path(work_dir) / FROZEN_CONFIG)
            atomic_write(Path(work_dir) / RECIPE_FILE, json.dumps(record, indent=1, default=str))
        return cfg, record, [], now_start
    keys = differences(frozen['view'], view) if frozen['fingerprint'] != now else []
    code_changed = ([] if 'code' not in frozen or frozen['code'].get('sha256') == code['sha256']
                    else code_differences(frozen['code'], code))
    inputs_changed = _input_differences(frozen.get('inputs'), inputs)
    drift = keys + [f'code {c}' for c in code_changed] + inputs_changed
    if not drift:
        return cfg, frozen, [], now_start
    if not request.accept_drift:
        what = '; '.join(part for part in (
            f'config {_shown(keys)}' if keys else '',
            f'code {_shown(code_changed)}' if code_changed else '',
            f'inputs {_shown(inputs_changed)}' if inputs_changed else '') if part)
        raise DriftError(
            f'{request.name}: this start is not what the job started with ({what} differ); '
            'resume it with what it started with (--accept-drift) or start it afresh in '
            'another work root')
    if keys:  # the frozen recipe, with this start's paths: the job goes on as it started
        old = Config.fromfile(Path(work_dir) / FROZEN_CONFIG).to_dict()
        current = cfg.to_dict()
        for key in RECIPE_KEYS:
            if key in old:
                cfg[key] = _rebase(old[key], current.get(key))
        weights = frozen['view'].get('model', {}).get('pretrained')
        if weights:
            cfg.model.pretrained = str(Path(request.weights_root) / weights)
        total = (frozen['view'].get('train_dataloader') or {}).get('batch_size')
        if total and request.batch is None:  # the frozen total, shared by this start's processes
            cfg.train_dataloader.batch_size = total // request.gpus
    return cfg, frozen, drift, now_start


def resume_point(work_dir: Path) -> Path | None:
    """The checkpoint a restart resumes from: the newest in the job folder whose SHA-256 is the
    one recorded when it was saved (one line for each damaged one passed over); without any,
    the one the pointer names (a rehearsal points at another folder's)."""
    work_dir = Path(work_dir)
    recorded = read_state(work_dir).get('checkpoints') or {}
    own = own_checkpoints(work_dir)
    for path in own:
        expected = (recorded.get(path.name) or {}).get('sha256')
        if expected is None or sha256_file(path, cache=None) == expected:
            return path
        print(f'{NOTICE_PREFIX}{path.name} is damaged (its SHA-256 is not the one recorded '
              'when it was saved): passed over', flush=True)
    if own:
        raise StateError(f'{work_dir}: no intact checkpoint (every one differs from its '
                         'recorded SHA-256)')
    pointer = work_dir / POINTER
    if pointer.is_file():
        target = Path(pointer.read_text().strip())
        if target.is_absolute() and target.is_file():
            return target
    return None


def _slurm() -> dict:
    names = {'SLURM_JOB_ID': 'job_id', 'SLURM_ARRAY_JOB_ID': 'array_job_id',
             'SLURM_ARRAY_TASK_ID': 'array_task_id', 'SLURM_RESTART_COUNT': 'restart_count',
             'SLURM_JOB_NODELIST': 'nodes'}
    return {short: os.environ[name] for name, short in names.items() if name in os.environ}


def start_entry(resumed_from: Path | None, fingerprint: str, drift: list[str],
                code: dict) -> dict:
    """This start, as the job's history keeps it (``code``: this start's code identity)."""
    from .provenance import environment, git_state, hardware, package_versions
    return {'time': time.time(), 'host': socket.gethostname(), 'pid': os.getpid(),
            'git': git_state(), 'versions': package_versions(), 'hardware': hardware(),
            'environment': environment(),
            'slurm': _slurm() or None,
            'resumed_from': checkpoint_iteration(resumed_from) if resumed_from else None,
            'recipe': fingerprint, 'code': code, 'drift': drift or None}


def _inputs(request: JobRequest) -> dict:
    """What the job reads whose bytes decide its numbers: the SHA-256 of the pretrained weights
    (with the original release's, where the spec knows it) or of a checkpoint evaluated, and
    the dataset's identity."""
    from .provenance import dataset_identity
    found = {}
    if request.checkpoint is not None:
        found['checkpoint'] = {'file': str(request.checkpoint),  # checked by the job already
                               'sha256': request.checkpoint_sha256
                               or sha256_file(request.checkpoint)}
    elif request.profile == 'full':
        weights = Path(request.weights_root) / request.row.pretrained_file
        found['pretrained'] = {'file': request.row.pretrained_file,
                               'sha256': sha256_file(weights) if weights.is_file() else None,
                               'release_sha256': request.row.pretrained_sha256}
    return {'files': found,
            'dataset': dataset_identity(request.data_root) if request.data_root else None}


def _final_evaluation(work_dir: Path) -> tuple[int | None, dict]:
    """(iteration, metrics) of a training job's last validation, from its curves."""
    _, val = read_curves(work_dir)
    if not len(val):
        return None, {}
    last = val.iloc[-1]
    return int(val.index[-1]), {m: float(last[m]) for m in ('mIoU', 'mAcc', 'aAcc')
                                if m in last and last[m] == last[m]}


def _comparable_sources(request: JobRequest, frozen: dict, history: list[dict]) -> str | None:
    """The recipe sources a record keeps: the frozen ones; for a job frozen by an older harness
    (sources of another format), the row's now when no start accepted a drift (each start then
    built the frozen recipe from the checkout), else unknown."""
    if frozen.get('sources_format') == SOURCES_FORMAT:
        return frozen.get('sources')
    if any(entry.get('drift') for entry in history):
        return None
    return recipe_sources(request.row)


def result_record(request: JobRequest, work_dir: Path, frozen: dict, state: dict,
                  metrics: dict | None = None, made_by: str = 'job') -> dict:
    """The result record of a finished job (:mod:`harness.core.result`): ``frozen`` is its
    recipe record, ``state`` its job state, ``metrics`` an evaluation's test metrics (a
    training job's come from its last validation)."""
    from .provenance import changes_during
    work_dir = Path(work_dir)
    history = state.get('history') or []
    view = frozen.get('view') or {}
    first_request = frozen.get('request') or request.to_json()
    scale = 'multi_scale' if request.multi_scale else 'single_scale'
    if request.kind == 'train':
        iteration, values = _final_evaluation(work_dir)
        path = latest_checkpoint(work_dir)
        saved = (state.get('checkpoints') or {}).get(path.name) if path else None
        checkpoint = {'file': path.name if path else None,
                      'sha256': (saved or {}).get('sha256'),
                      'bytes': path.stat().st_size if path and path.is_file() else None}
    else:
        values = dict(metrics or {})
        iteration = None
        # recipes frozen before they kept the inputs: the job's meta, or the request's own hash
        entry = (((frozen.get('inputs') or {}).get('files') or {}).get('checkpoint')
                 or ((state.get('meta') or {}).get('inputs') or {}).get('checkpoint') or {})
        checkpoint = {'file': str(request.checkpoint),
                      'sha256': entry.get('sha256') or request.checkpoint_sha256,
                      'bytes': Path(request.checkpoint).stat().st_size
                      if Path(request.checkpoint).is_file() else None,
                      'released': request.released}
    values['per_class_IoU'] = read_per_class(work_dir)
    starts = [{'start': k, 'drift': entry['drift']}
              for k, entry in enumerate(history, 1) if entry.get('drift')]
    return {
        'kind': request.kind,
        'job': {'table': request.row.table, 'spec': table_arg(request.row),
                'row': request.row.id, 'profile': request.profile, 'seed': request.seed,
                'multi_scale': request.multi_scale, 'released': request.released},
        'made_by': made_by, 'written': time.time(),
        'iteration': iteration, 'metrics': {scale: values}, 'checkpoint': checkpoint,
        'recipe': {'fingerprint': frozen['fingerprint'],
                   'seed_free': frozen.get('seed_free') or seed_free_fingerprint(view),
                   'sources': _comparable_sources(request, frozen, history)},
        'code': frozen.get('code'),
        'code_by_start': [(entry.get('code') or {}).get('sha256') for entry in history],
        'inputs': frozen.get('inputs'),
        'trained': {'precision': first_request.get('amp') or 'fp32',
                    'total_batch': (view.get('train_dataloader') or {}).get('batch_size'),
                    'max_iters': (view.get('train_cfg') or {}).get('max_iters'),
                    'processes': [entry.get('processes') for entry in history]},
        'drift': starts,
        'changes': changes_during(history),
        'versions': (history[0].get('versions') if history else None),
        # the files it summarises, by their name in the job folder
        'files': {str(name): sha256_file(work_dir / name, cache=None)
                  for name in (CURVES_FILE, PER_CLASS_FILE) if (work_dir / name).is_file()},
    }
