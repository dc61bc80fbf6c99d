"""Plan: what running a table would take, per row x seed, before anything is launched.

Every number comes from the job's resolved config (the one ``run`` would train) or from a
measurement on record: per-GPU batch and iterations from the config; GPU-hours from the spec's
``speed`` or from the logged seconds per iteration of a job already on disk ("unknown"
otherwise); disk from the model's parameter count, the optimiser's state per parameter and the
checkpoint hook's settings. Nothing is launched and nothing is written.
"""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

from ..layout import job_dir, read_curves, read_state
from .job_config import build_config
from .request import JobRequest
from .spec import Row

BYTES_PER_VALUE = 4  # fp32 weights and optimiser buffers
# text logs, curves, per-class IoU and the offline W&B run of a 160k-iteration job: a generous
# allowance rather than a measurement (they are megabytes next to gigabytes of checkpoints)
LOG_ALLOWANCE = 100 * 2 ** 20


@dataclasses.dataclass
class JobPlan:
    row: Row
    seed: int
    config: str
    gpus: int
    batch_per_gpu: int
    iters: int
    params: int
    buffers: int
    checkpoint_bytes: int
    kept_checkpoints: int
    disk_bytes: int
    gpu_hours: float | None
    speed_source: str
    weights: str
    state: str


def _optimizer_buffers(optimizer: dict) -> int:
    """Tensors the optimiser keeps per parameter (saved with every checkpoint)."""
    kind = optimizer.get('type', '')
    if kind == 'SGD':
        return 1 if optimizer.get('momentum', 0) else 0
    return 2  # Adam-style optimisers: two moments


def _kept_checkpoints(cfg, iters: int) -> int:
    """Checkpoints on disk at the peak: mmengine deletes the oldest before it writes the next
    one, so at most max_keep_ckpts (the project's saving adds no extra copy)."""
    hook = cfg.default_hooks.checkpoint
    saved = iters // hook.interval + (1 if hook.get('save_last', True)
                                      and iters % hook.interval else 0)
    keep = hook.get('max_keep_ckpts', -1)
    return min(saved, keep) if keep > 0 else saved


def _count_params(row: Row, profile: str, depth: int) -> int:
    """Parameters of the job's model. The encoder's blocks are identical, so the count is
    linear in their number: built with 1 and 2 blocks (fast, even for ViT-L), extrapolated
    exactly to the config's depth."""
    from .model import build_model
    counts = [sum(p.numel() for p in build_model(row, profile, num_layers=n).parameters())
              for n in (1, 2)]
    return counts[0] + (depth - 1) * (counts[1] - counts[0])


def _logged_speed(row: Row, profile: str, work_root: Path, seeds: int) -> tuple[float, str] | None:
    """Seconds per iteration x GPUs, from the training log of a job of this row on disk."""
    for seed in range(max(seeds, 1)):
        work_dir = job_dir(work_root, profile, row.table, row.id, seed)
        train, _ = read_curves(work_dir)
        if len(train) and 'time' in train:
            gpus = read_state(work_dir).get('gpus', 1)
            return (float(train['time'].mean()) * gpus,
                    f'logged by {work_dir} ({int(train.index.max())} iterations, {gpus} GPU(s))')
    return None


def _weights(row: Row, profile: str, weights_root: Path) -> str:
    if profile == 'smoke':
        return 'not used (random init)'
    if (Path(weights_root) / row.pretrained_file).is_file():
        return f'present ({row.pretrained_file})'
    if row.pretrained_id is None:
        return (f'MISSING {row.pretrained_file}: needs a user-supplied file (no public '
                f'release matches; `harness weights --rows {row.id} --from FILE`)')
    return f'MISSING {row.pretrained_file} (make weights ROWS={row.id})'


def plan_job(row: Row, seed: int, profile: str, gpus: int, work_root: Path, data_root: Path,
             weights_root: Path, seeds: int, cache: dict) -> JobPlan:
    work_dir = job_dir(work_root, profile, row.table, row.id, seed)
    if row.id not in cache:  # the seed changes nothing but the random state
        with warnings.catch_warnings():  # mmseg's deprecation notes are not part of the plan
            warnings.simplefilter('ignore')
            cfg = build_config(JobRequest(row=row, profile=profile, seed=seed,
                                          work_dir=work_dir, data_root=data_root, gpus=gpus,
                                          weights_root=weights_root))
            cache[row.id] = cfg, _count_params(row, profile, cfg.model.backbone.num_layers)
    cfg, params = cache[row.id]
    iters = cfg.train_cfg.max_iters
    buffers = _optimizer_buffers(cfg.optim_wrapper.optimizer)
    ckpt = params * BYTES_PER_VALUE * (1 + buffers)
    kept = _kept_checkpoints(cfg, iters)
    hours, source = None, 'no speed in the spec, no job log yet'
    if row.speed is not None:
        hours = row.speed.seconds_per_iter * row.speed.gpus * iters / 3600
        source = (f'spec: {row.speed.seconds_per_iter:g} s/iteration on {row.speed.gpus} x '
                  f'{row.speed.gpu} ({row.speed.source})')
    elif (logged := _logged_speed(row, profile, work_root, seeds)) is not None:
        hours, source = logged[0] * iters / 3600, logged[1]
    state = 'job ' + read_state(work_dir).get('status', 'not run yet')
    return JobPlan(row=row, seed=seed, config=row.config, gpus=gpus,
                   batch_per_gpu=cfg.train_dataloader.batch_size, iters=iters, params=params,
                   buffers=buffers,
                   checkpoint_bytes=ckpt, kept_checkpoints=kept,
                   disk_bytes=ckpt * kept + LOG_ALLOWANCE, gpu_hours=hours,
                   speed_source=source, weights=_weights(row, profile, weights_root),
                   state=state)


def data_status(profile: str, data_root: Path) -> str:
    if profile == 'smoke':
        return f'synthetic, generated on first use at {data_root}'
    from ..assets.data import DataError, check_layout
    try:
        found = check_layout(Path(data_root))
    except DataError as err:
        return f'MISSING: {err}'
    return (f'present at {data_root} ({found["training"]} training, '
            f'{found["validation"]} validation images; layout checked)')


def _gb(n: int) -> str:
    return f'{n / 2 ** 30:.2f} GB'


def _launch(launcher: str, gpus: int) -> str:
    return {'local': f'local ({gpus} GPU(s), one process)',
            'torchrun': f'torchrun --nproc_per_node {gpus}',
            'slurm': f'slurm (one task, {gpus} GPU(s))'}[launcher]


def print_plan(tables_rows, profile: str, gpus: int, seeds: int, launcher: str,
               work_root: Path, data_root: Path, weights_root: Path) -> None:
    print(f'plan ({profile} profile, {seeds} seed(s), {gpus} GPU(s) per job, launcher '
          f'{launcher}); nothing is launched or written')
    print(f'data: {data_status(profile, data_root)}')
    plans, cache = [], {}
    for table, rows in tables_rows:
        print(f'{table.name}:')
        for row in rows:
            for seed in range(seeds):
                p = plan_job(row, seed, profile, gpus, work_root, data_root, weights_root,
                             seeds, cache)
                plans.append(p)
                hours = 'unknown' if p.gpu_hours is None else f'{p.gpu_hours:.1f}'
                print(f'  {row.id} seed{seed}: {p.config} ({p.state})\n'
                      f'      launcher {_launch(launcher, gpus)}, GPUs {p.gpus}, batch/GPU '
                      f'{p.batch_per_gpu}, iterations {p.iters}\n'
                      f'      GPU-hours {hours} ({p.speed_source})\n'
                      f'      disk {_gb(p.disk_bytes)}: {p.kept_checkpoints} checkpoints x '
                      f'{_gb(p.checkpoint_bytes)} ({p.params} params x {BYTES_PER_VALUE} B x '
                      f'(weights + {p.buffers} optimiser buffer(s))) + '
                      f'{LOG_ALLOWANCE // 2 ** 20} MB logs\n'
                      f'      weights {p.weights}')
    known = [p.gpu_hours for p in plans if p.gpu_hours is not None]
    unknown = len(plans) - len(known)
    hours = ('GPU-hours unknown for all (no speed measured yet)' if not known else
             f'{sum(known):.1f} GPU-hours' + (f' + unknown for {unknown} job(s)' if unknown
                                               else ''))
    missing = sorted({p.row.pretrained_file for p in plans if p.weights.startswith('MISSING')})
    print(f'total: {len(plans)} job(s), {hours}, disk {_gb(sum(p.disk_bytes for p in plans))}'
          f', weights missing: {", ".join(missing) or "none"}')
