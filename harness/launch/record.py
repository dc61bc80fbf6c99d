"""What binds a job's numbers to what produced them, kept in its folder by the job process:
the recipe frozen at the first start (effective config, row, request, fingerprints), one history
entry appended per start, the inputs' SHA-256, and the checkpoint a restart resumes from."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import socket
import time
from pathlib import Path

from ..core.atomic import atomic_write
from ..core.errors import StateError
from ..core.hashing import sha256_file
from ..core.layout import FROZEN_CONFIG, POINTER, RECIPE_FILE
from ..core.request import JobRequest
from ..core.sources import recipe_sources
from ..core.state import NOTICE_PREFIX, read_recipe, read_state

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


def freeze_or_check(request: JobRequest, cfg, work_dir: Path, write: bool = True):
    """At the first start, freeze ``cfg``'s recipe into the job folder; at a restart, return
    the frozen recipe's config (with this start's paths) and refuse, with one line naming the
    first differing keys, when the checkout now builds another recipe, unless the request
    accepts the drift. Returns (config, fingerprint, drifted keys)."""
    from mmengine.config import Config

    from ..prepare.fingerprint import RECIPE_KEYS, differences, fingerprint, recipe_view
    view = recipe_view(cfg, request.weights_root, request.gpus)
    now = fingerprint(view)
    frozen = read_recipe(work_dir)
    if frozen is None:
        if not write:  # another process of the job freezes it
            return cfg, now, []
        cfg.dump(Path(work_dir) / FROZEN_CONFIG)
        record = {'fingerprint': now, 'sources': recipe_sources(request.row), 'view': view,
                  'row': dataclasses.asdict(request.row), 'request': request.to_json(),
                  'frozen': time.time()}
        atomic_write(Path(work_dir) / RECIPE_FILE, json.dumps(record, indent=1, default=str))
        return cfg, now, []
    if frozen['fingerprint'] == now:
        return cfg, now, []
    keys = differences(frozen['view'], view)
    if not request.accept_drift:
        shown = ', '.join(keys[:SHOWN_KEYS]) + (f' and {len(keys) - SHOWN_KEYS} more'
                                                 if len(keys) > SHOWN_KEYS else '')
        raise StateError(
            f'{request.name}: the recipe this checkout builds ({now}) is not the one the job '
            f"started with ({frozen['fingerprint']}): {shown} differ; resume it with its frozen "
            'recipe (--accept-drift) or start it afresh in another work root')
    # the frozen recipe, with this start's paths: the job goes on as it started
    old = Config.fromfile(Path(work_dir) / FROZEN_CONFIG).to_dict()
    current = cfg.to_dict()
    for key in RECIPE_KEYS:
        if key in old:
            cfg[key] = _rebase(old[key], current.get(key))
    weights = frozen['view'].get('model', {}).get('pretrained')
    if weights:
        cfg.model.pretrained = str(Path(request.weights_root) / weights)
    return cfg, frozen['fingerprint'], keys


def _iteration(path: Path) -> int | None:
    found = re.fullmatch(r'iter_(\d+)\.pth', path.name)
    return int(found.group(1)) if found else None


def resume_point(work_dir: Path, log=print) -> Path | None:
    """The checkpoint a restart resumes from: the newest in the job folder whose SHA-256 is the
    one recorded when it was saved (one line for each damaged one passed over); without any,
    the one the pointer names (a rehearsal points at another folder's)."""
    work_dir = Path(work_dir)
    recorded = read_state(work_dir).get('checkpoints') or {}
    own = sorted((p for p in work_dir.glob('iter_*.pth') if _iteration(p) is not None),
                 key=_iteration, reverse=True)
    for path in own:
        expected = (recorded.get(path.name) or {}).get('sha256')
        if expected is None or sha256_file(path) == expected:
            return path
        log(f'{NOTICE_PREFIX}{path.name} is damaged (its SHA-256 is not the one recorded '
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


def start_entry(resumed_from: Path | None, fingerprint: str, drift: list[str]) -> dict:
    """This start, as the job's history keeps it."""
    from .provenance import git_state, hardware, package_versions
    return {'time': time.time(), 'host': socket.gethostname(), 'pid': os.getpid(),
            'git': git_state(), 'versions': package_versions(), 'hardware': hardware(),
            'slurm': _slurm() or None,
            'resumed_from': _iteration(resumed_from) if resumed_from else None,
            'recipe': fingerprint, 'drift': drift or None}


def input_fingerprints(request: JobRequest) -> dict:
    """SHA-256 of the files the job reads whose bytes decide its numbers: the pretrained
    weights (with the original release's, where the spec knows it), a checkpoint evaluated."""
    found = {}
    if request.checkpoint is not None:
        found['checkpoint'] = {'file': str(request.checkpoint),
                               'sha256': sha256_file(request.checkpoint)}
    elif request.profile == 'full':
        weights = Path(request.weights_root) / request.row.pretrained_file
        found['pretrained'] = {'file': request.row.pretrained_file,
                               'sha256': sha256_file(weights) if weights.is_file() else None,
                               'release_sha256': request.row.pretrained_sha256}
    return found
