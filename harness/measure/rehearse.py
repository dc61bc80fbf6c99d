"""Rehearsal: each row's full-profile job at its real size, for a few iterations, measured.

A rehearsal is the job ``run --profile full`` would launch (same JobRequest, launcher, job
process and config) with substitutions recorded in the result: the synthetic copy of the row's
dataset at its image sizes (``harness.assets.synthetic``, size ``real``); random weights in the
row's release layout (timm or DeiT names, the 384-pixel position grid), converted by the
``weights`` code and loaded through the row's ``init_cfg``; ``max_iters`` N (the poly decay,
the checkpoint and the evaluation at N); only if asked, a smaller per-GPU batch. The steps of
a row and what is measured: docs/reproduce.md, "Rehearsal: every row at its real size". The job
processes measure themselves (``harness.launch.job.measured``); results:
:mod:`harness.measure.rehearsal_result`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shutil
import sys
import time
import warnings
from pathlib import Path

from ..assets.weights import RELEASE_GRID
from ..core.atomic import atomic_write
from ..core.errors import HarnessError, LaunchError, StateError, WeightsError
from ..core.layout import POINTER, checkpoint_name, job_dir, ours_eval_dir, shown
from ..core.request import JobRequest
from ..core.result import read_result
from ..core.spec import Row
from ..core.state import read_state
from .rehearsal_result import (PeakMemory, RehearsalMachine, RehearsalRun, RowFailure,
                               RowRehearsal, Substitutions, flags, write_rehearsal)

PIPELINE_SAMPLES = 8  # training samples timed through the pipeline, after one warm-up


def device_kind(device: str) -> str:
    """The name results are filed under: ``cpu``, or the GPU model (``cuda: NVIDIA H200``)."""
    if device == 'cpu':
        return 'cpu'
    from ..launch.provenance import hardware
    gpus = hardware()['gpus']
    if not gpus:
        import torch
        raise LaunchError(f'no CUDA device visible to torch {torch.__version__}')
    return f'cuda: {gpus[0]}'


def _install_release(row: Row, weights_root: Path, done: dict) -> str:
    """The row's random release converted into the rehearsal's weights folder, once per file
    (rows that share a release share it, as ``make weights`` does)."""
    from ..assets.weights import install_row, original_name, write_random_release
    if row.pretrained_file in done:
        return done[row.pretrained_file]
    originals = weights_root / 'original'
    release = originals / original_name(row)
    if not release.is_file():
        write_random_release(row, release)
    done[row.pretrained_file] = install_row(row, weights_root, originals, source=release)
    return done[row.pretrained_file]


def check_pretrained(request: JobRequest) -> str:
    """Build the job's model as mmengine's Runner does (its config, ``init_weights``) and
    compare its encoder with the converted release: mmseg loads ``init_cfg`` weights
    leniently (a tensor of another shape is skipped with a warning), so a release of another
    backbone would train from random values without failing. Raises WeightsError naming the
    first tensor that did not arrive; returns what arrived."""
    import logging

    import torch
    from mmengine.logging import MMLogger
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    from ..prepare.job_config import build_config
    register_all_modules()
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)  # init_weights logs a paragraph per tensor at INFO
    try:
        # and prints where it loads from and how it resizes the grid: the job's log has both,
        # the rehearsal's output keeps one line per row
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter('ignore')
            cfg = build_config(request)
            model = MODELS.build(cfg.model)
            model.init_weights()
    finally:
        logger.setLevel(level)
    encoder = model.backbone.state_dict()
    path = Path(request.weights_root) / request.row.pretrained_file
    release = torch.load(path, map_location='cpu', weights_only=True)
    release = release.get('state_dict', release)
    for key, value in release.items():
        got = encoder.get(key)
        if key == 'pos_embed' and got is not None and got.shape[-1] == value.shape[-1]:
            tokens = value.shape[1] - RELEASE_GRID ** 2  # class (and distillation) tokens
            same = torch.equal(got[:, :tokens], value[:, :tokens])
        else:
            same = got is not None and got.shape == value.shape and torch.equal(got, value)
        if not same:
            shape = 'absent' if got is None else tuple(got.shape)
            raise WeightsError(
                f'pretrained {key} {tuple(value.shape)} of {request.row.pretrained_file} did not '
                f'arrive in the encoder ({shape}): init_cfg skips what does not fit')
    grid = encoder['pos_embed'].shape[1] - (release['pos_embed'].shape[1] - RELEASE_GRID ** 2)
    return (f'{len(release)} of {len(release)} encoder tensors loaded through init_cfg; '
            f'position grid {RELEASE_GRID}x{RELEASE_GRID} -> {int(grid ** 0.5)}x'
            f'{int(grid ** 0.5)}')


def pipeline_rate(request: JobRequest, samples: int = PIPELINE_SAMPLES) -> dict:
    """Training samples per second through the job's own data pipeline in this one process
    (what one loader worker delivers), and the job's loader workers."""
    from mmseg.registry import DATASETS
    from mmseg.utils import register_all_modules

    from ..prepare.job_config import build_config
    register_all_modules()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        cfg = build_config(request)
        dataset = DATASETS.build(cfg.train_dataloader.dataset)
        dataset[0]  # warm-up: file cache, lazy init
        start = time.perf_counter()
        for i in range(samples):
            dataset[(i + 1) % len(dataset)]
        seconds = time.perf_counter() - start
    return {'images_per_s_per_worker': samples / seconds, 'samples': samples,
            'workers': cfg.train_dataloader.num_workers}


def _launch(request: JobRequest, tag: str) -> dict:
    """Run one job through the local launcher (the path ``run`` takes); its state."""
    from ..launch.launchers import LocalLauncher, Target
    # the launcher's error line is folded into the row's one line (rehearse prints it)
    with contextlib.redirect_stderr(io.StringIO()):
        LocalLauncher().run([Target(request, tag)])
    state = read_state(request.work_dir)
    if state.get('status') != 'finished':
        raise StateError(f"{request.kind} job {state.get('status', 'did not start')}: "
                         f"{state.get('error')} (log: {request.work_dir})")
    return state


def _steady(measured: dict, key: str) -> float | None:
    entry = measured.get(key)
    if not entry:
        return None
    return entry['steady_median'] if entry['steady_median'] is not None else entry['first']


def rehearse_row(row: Row, *, amp: str | None, iters: int, batch: int | None,
                 multi_scale: bool, work_root: Path, data_root: Path, releases: dict,
                 tag: str, keep_checkpoints: bool = False, resume: bool = True) -> RowRehearsal:
    """Train, resume and time ``row``'s full-profile job (docs/reproduce.md); raises
    on the first step that fails."""
    weights_root = work_root / 'weights'
    train_dir = job_dir(work_root, 'full', row.folder, row.id, 0)
    resume_dir = job_dir(work_root / 'resumed', 'full', row.folder, row.id, 0)
    for folder in (train_dir, resume_dir):  # the rehearsal's own scratch from a previous one
        shutil.rmtree(folder, ignore_errors=True)
    try:
        converted = _install_release(row, weights_root, releases)
    except Exception as err:  # noqa: BLE001 - any failure of this row is one line
        raise WeightsError(f'pretrained weights: {str(err).splitlines()[0]}') from None
    request = JobRequest(row=row, profile='full', seed=0, work_dir=train_dir,
                         data_root=data_root, weights_root=weights_root, amp=amp,
                         max_iters=iters, batch=batch)
    real_batch = row.data.recipe.batch
    entry = {'batch': batch or real_batch, 'real_batch': real_batch, 'iters': iters,
             'crop': row.crop_size, 'weights': converted,
             'weights_loaded': check_pretrained(request)}
    start = time.monotonic()
    state = _launch(request, f'{tag} train {iters} iterations')
    measured = state['measured']
    checkpoint = train_dir / checkpoint_name(iters)
    if not checkpoint.is_file():
        raise StateError(f'no checkpoint {checkpoint.name} after {iters} iterations')
    entry.update(
        train_s_per_iter=_steady(measured, 'train/time'),
        train_data_s_per_iter=_steady(measured, 'train/data_time'),
        train_first_iter_s=measured['train/time']['first'],
        eval_s_per_image=(measured['val/time']['mean'] if 'val/time' in measured else None),
        eval_images=measured.get('images_evaluated'),
        eval_windows=measured.get('windows'),
        peak_memory=PeakMemory(**measured['peak_memory']),
        checkpoint_bytes=checkpoint.stat().st_size,
        checkpoint_save_s=_steady(measured, 'checkpoint/save_time'),
        loss=measured.get('train/loss', {}).get('last'),
        train_dir=shown(train_dir))
    if resume:
        entry['resumed'] = _resume(request, checkpoint, resume_dir, tag)
    if multi_scale:  # the checkpoint the training's result record names, by its SHA-256
        sha = _recorded_sha256(train_dir, checkpoint)
        ms = _launch(dataclasses.replace(request, checkpoint=checkpoint, multi_scale=True,
                                         checkpoint_sha256=sha,
                                         work_dir=ours_eval_dir(train_dir, True, sha)),
                     f'{tag} multi-scale evaluation')
        entry['eval_ms_s_per_image'] = ms['measured']['test/time']['mean']
    entry.update(pipeline_rate(request))
    entry['wall_s'] = time.monotonic() - start
    if not keep_checkpoints:  # gigabytes each for ViT-L rows
        for folder, step in ((train_dir, iters), (resume_dir, iters + 1)):
            (folder / checkpoint_name(step)).unlink(missing_ok=True)
    return RowRehearsal(**entry)


def _recorded_sha256(train_dir: Path, checkpoint: Path) -> str:
    """The SHA-256 of ``checkpoint`` as the training job's result record holds it."""
    record = read_result(train_dir) or {}
    entry = record.get('checkpoint') or {}
    if entry.get('file') != checkpoint.name or not entry.get('sha256'):
        raise StateError(f'{train_dir}: its result record does not name {checkpoint.name} '
                         'with its SHA-256')
    return entry['sha256']


def _resume(request: JobRequest, checkpoint: Path, resume_dir: Path, tag: str) -> str:
    """Resume from ``checkpoint`` as the job's next start would find it (mmengine reads the
    pointer) for one more iteration; mmengine restores the timers' history with the rest, so
    the resumed job counts N + 1 iterations."""
    iters = request.max_iters
    resume_dir.mkdir(parents=True)
    atomic_write(resume_dir / POINTER, str(checkpoint))
    resumed = _launch(dataclasses.replace(request, work_dir=resume_dir, max_iters=iters + 1),
                      f'{tag} resume')
    counted = resumed['measured']['train/time']['count']
    if counted != iters + 1:
        raise StateError(f'resumed job ran {counted} iterations in all, expected '
                         f'{iters} from {checkpoint.name} + 1')
    return f'from {checkpoint.name} to iteration {iters + 1}'


def rehearse(*, rows: list[Row], device: str, amp: str | None, iters: int, batch: int | None,
             multi_scale: bool, out: Path, work_root: Path, data_root: Path | None,
             keep_checkpoints: bool, resume: bool) -> RehearsalRun:
    """Rehearse ``rows`` on ``device`` (``cpu`` or ``cuda``) in ``amp`` (None: fp32), each row
    ``iters`` iterations at its real batch or at ``batch`` per GPU; a row that fails is one
    line on stderr and the others run. Returns this run's result, also merged into ``out``
    row by row."""
    from ..assets.synthetic import ensure_dataset
    if device == 'cpu':  # the job processes inherit it: a GPU machine rehearses its CPU
        os.environ['CUDA_VISIBLE_DEVICES'] = ''
    kind = device_kind(device)
    work_root = Path(work_root) / kind.replace(': ', '-').replace(' ', '_')
    declared = {row.data.name: row.data for row in rows}
    if data_root is not None and len(declared) > 1:
        raise LaunchError(f"--data-root names one folder, and the rows train on "
                          f"{', '.join(sorted(declared))}: rehearse them one dataset at a time")
    # each dataset's real-size synthetic copy, made before the first row runs
    roots = {name: ensure_dataset(data_root, size='real', declared=data)
             for name, data in declared.items()}
    real = ', '.join(f'{data.title} {data.recipe.batch}' for data in declared.values())
    run = RehearsalRun(
        device=kind, precision=amp or 'fp32', machine=RehearsalMachine.of(device),
        date=time.strftime('%Y-%m-%d %H:%M'),
        command=' '.join(['python -m harness'] + sys.argv[1:]),
        substitutions=Substitutions(
            data='synthetic, each dataset at its image sizes ('
                 + ', '.join(f'{declared[name].title}: {shown(root)}'
                             for name, root in roots.items()) + ')',
            weights='random values in the release key layout, converted by `harness weights` '
                    'code, loaded through init_cfg',
            iterations=iters, batch=batch or f'{real} (real)'))
    releases = {}
    for n, row in enumerate(rows, 1):
        key = f'{row.table}/{row.id}'
        tag = f'[{n}/{len(rows)}] {key}'
        try:
            entry = rehearse_row(row, amp=amp, iters=iters, batch=batch,
                                 multi_scale=multi_scale, work_root=work_root,
                                 data_root=roots[row.data.name], releases=releases, tag=tag,
                                 keep_checkpoints=keep_checkpoints, resume=resume)
        except Exception as err:  # noqa: BLE001 - one line per failed row, the others run
            text = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            message = text if isinstance(err, HarnessError) else f'{type(err).__name__}: {text}'
            print(f'error: rehearsal of {key} failed: {message}', file=sys.stderr, flush=True)
            run.rows[key] = failure = RowFailure(error=message,
                                                 batch=batch or row.data.recipe.batch)
            if 'out of memory' in message.lower():
                failure.flags.append(f'does not fit: out of memory at batch {failure.batch}')
        else:
            entry.flags = flags(entry, run.machine)
            run.rows[key] = entry
            print(f'{tag}: {entry.train_s_per_iter:.2f} s/iteration at batch {entry.batch}, '
                  f'evaluation {entry.eval_s_per_image:.2f} s/image, '
                  f'peak {entry.peak_memory.bytes / 2 ** 30:.1f} GB'
                  + ''.join(f'; {f}' for f in entry.flags), flush=True)
        write_rehearsal(run, out)  # each row on disk as soon as it is done
    return run
