"""Plan: what running a table would take, per row x seed, before anything is launched.

Every number comes from the job's resolved config (the one ``run`` would train) or from a
measurement on record; where the time comes from, in order: docs/reproduce.md, "3. Plan" (a
rehearsal: :mod:`harness.measure.rehearse`). Disk from the model's parameter count, the
optimiser's state per parameter and the checkpoint hook's settings. Nothing is launched and
nothing is written.
"""
from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

from ..core.datasets import Dataset
from ..core.errors import DataError
from ..core.layout import job_dir
from ..core.request import JobRequest
from ..core.spec import Row
from ..core.state import read_curves, read_state
from ..prepare.job_config import build_config, does_not_build
from .rehearsal_result import Rehearsals, RowFailure, gb, load_rehearsals, loader_rates

BYTES_PER_VALUE = 4  # fp32 weights and optimiser buffers
# text logs, curves, per-class IoU and the offline W&B run of a 160k-iteration job: a generous
# allowance rather than a measurement (they are megabytes next to gigabytes of checkpoints)
LOG_ALLOWANCE = 100 * 2 ** 20


@dataclasses.dataclass
class JobPlan:
    row: Row
    batch_per_gpu: int
    iters: int
    params: int
    buffers: int
    checkpoint_bytes: int
    kept_checkpoints: int
    disk_bytes: int
    gpu_hours: float | None
    wall_hours: float | None
    speed_source: str
    weights: str
    state: str
    loader: str


def _optimizer_buffers(optimizer: dict) -> int:
    """Tensors the optimiser keeps per parameter (saved with every checkpoint)."""
    if optimizer.get('type') == 'SGD':
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
    from ..prepare.model import build_model
    counts = [sum(p.numel() for p in build_model(row, profile, num_layers=n).parameters())
              for n in (1, 2)]
    return counts[0] + (depth - 1) * (counts[1] - counts[0])


def _logged_speed(row: Row, profile: str, work_root: Path, seeds: int) -> tuple[float, str] | None:
    """Seconds per iteration x GPUs, from the training log of a job of this row on disk."""
    for seed in range(max(seeds, 1)):
        work_dir = job_dir(work_root, profile, row.folder, row.id, seed)
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


def _kinds(results: Rehearsals, device: str | None) -> list[str]:
    """The device kinds on record that ``device`` asks for (None: any GPU)."""
    return [k for k in results if (k == device if device else k.startswith('cuda'))]


def _rehearsals(row: Row, results: Rehearsals, device: str | None):
    """(kind, run, entry) of each fp32 rehearsal of ``row`` that succeeded on those kinds."""
    for kind in _kinds(results, device):
        run = results[kind].get('fp32')
        entry = run.rows.get(f'{row.table}/{row.id}') if run else None
        if entry is not None and not isinstance(entry, RowFailure):
            yield kind, run, entry


def rehearsed_time(row: Row, iters: int, val_interval: int, batch_per_gpu: int, gpus: int,
                   results: Rehearsals, device: str | None) -> tuple:
    """GPU-hours and wall-clock of one job from a rehearsal of its row on ``device`` (a device
    kind; None: any GPU on record), in fp32 at the job's per-GPU batch: ``iters`` x seconds
    per iteration x GPUs, plus the evaluations (every ``val_interval`` iterations, the
    validation images of the row's dataset at the rehearsal's single-scale seconds per image,
    split among the GPUs): (GPU-hours, wall-clock hours, where from); (None, None, why) when
    no such rehearsal is on record."""
    kinds = _kinds(results, device)
    if not kinds:
        return None, None, f"no rehearsal on {device or 'a GPU'} yet (make rehearse)"
    why = f"no fp32 rehearsal of {row.table}/{row.id} on {' / '.join(kinds)}"
    for kind, run, entry in _rehearsals(row, results, device):
        if entry.batch != batch_per_gpu:
            why = (f"rehearsal on {kind} at batch {entry.batch}, not the job's "
                   f'{batch_per_gpu} per GPU')
            continue
        if entry.eval_s_per_image is None or entry.train_s_per_iter is None:
            why = f'rehearsal on {kind} without a training or evaluation time'
            continue
        # mmengine evaluates every val_interval iterations and always at the last one
        evaluations = -(-iters // val_interval)
        eval_s = evaluations * row.data.counts['validation'] * entry.eval_s_per_image
        train_s = iters * entry.train_s_per_iter
        return ((train_s * gpus + eval_s) / 3600, (train_s + eval_s / gpus) / 3600,
                f'rehearsal on {kind}, {run.date}: {entry.train_s_per_iter:.3f} '
                f's/iteration, {entry.eval_s_per_image:.3f} s per evaluated image '
                f'x {evaluations} evaluations')
    return None, None, why


def loader_feed(row: Row, workers: int, processes: int, results: Rehearsals,
                device: str | None) -> str:
    """The job's loader workers per process and where they come from, and whether they would
    keep up with the training step (from a rehearsal of the row on ``device``: the pipeline's
    images per second per worker x workers against the images per second a step consumes)."""
    from ..core.allocation import loader_workers
    line = f'{workers} loader worker(s) per process ({loader_workers(processes)[1]} here)'
    for kind, _, entry in _rehearsals(row, results, device):
        rates = loader_rates(entry, workers)
        if rates is None:
            continue
        fed, need = rates
        verdict = 'DATA-BOUND' if fed < need else 'keeps up'
        return (f'{line}: {verdict} on {kind} ({max(workers, 1)} x '
                f'{entry.images_per_s_per_worker:.1f} images/s against {need:.1f} the step '
                'consumes)')
    return line


def plan_job(row: Row, seed: int, *, profile: str, gpus: int, work_root: Path,
             data_root: Path, weights_root: Path, seeds: int, cache: dict,
             rehearsals: Rehearsals, device: str | None) -> JobPlan:
    work_dir = job_dir(work_root, profile, row.folder, row.id, seed)
    key = (row.folder, row.id)  # row ids repeat across tables (Seg-L-Mask/16)
    if key not in cache:  # the seed changes nothing but the random state
        with warnings.catch_warnings():  # mmseg's deprecation notes are not part of the plan
            warnings.simplefilter('ignore')
            try:
                cfg = build_config(JobRequest(row=row, profile=profile, seed=seed,
                                              work_dir=work_dir, data_root=data_root, gpus=gpus,
                                              weights_root=weights_root))
                cache[key] = cfg, _count_params(row, profile, cfg.model.backbone.num_layers)
            except Exception as err:  # noqa: BLE001 - whatever mmengine/mmseg raise, one line
                raise does_not_build(row, err) from None
    cfg, params = cache[key]
    iters = cfg.train_cfg.max_iters
    buffers = _optimizer_buffers(cfg.optim_wrapper.optimizer)
    ckpt = params * BYTES_PER_VALUE * (1 + buffers)
    kept = _kept_checkpoints(cfg, iters)
    hours, wall, source = None, None, 'no speed in the spec, no job log yet'
    if row.speed is not None:
        hours = row.speed.seconds_per_iter * row.speed.gpus * iters / 3600
        wall = row.speed.seconds_per_iter * iters / 3600
        source = (f'spec: {row.speed.seconds_per_iter:g} s/iteration on {row.speed.gpus} x '
                  f'{row.speed.gpu} ({row.speed.source})')
    elif (logged := _logged_speed(row, profile, work_root, seeds)) is not None:
        hours, source = logged[0] * iters / 3600, logged[1]
        wall = hours / gpus
    elif profile == 'full':
        hours, wall, why = rehearsed_time(row, iters, cfg.train_cfg.val_interval,
                                          cfg.train_dataloader.batch_size, gpus, rehearsals,
                                          device)
        source = f'{source}; {why}' if hours is None else why
    state = 'job ' + read_state(work_dir).get('status', 'not run yet')
    return JobPlan(row=row, batch_per_gpu=cfg.train_dataloader.batch_size, iters=iters,
                   params=params, buffers=buffers, checkpoint_bytes=ckpt, kept_checkpoints=kept,
                   disk_bytes=ckpt * kept + LOG_ALLOWANCE, gpu_hours=hours,
                   wall_hours=wall, speed_source=source,
                   weights=_weights(row, profile, weights_root), state=state,
                   loader=loader_feed(row, cfg.train_dataloader.num_workers, gpus,
                                      rehearsals, device))


def data_status(profile: str, data_root: Path, declared: Dataset) -> str:
    if profile == 'smoke':
        return f'synthetic {declared.title}, generated on first use at {data_root}'
    from ..assets.data import check_layout
    try:
        found = check_layout(Path(data_root), declared=declared)
    except DataError as err:
        return f'MISSING: {err}'
    return (f'{declared.title} present at {data_root} ({found["training"]} training, '
            f'{found["validation"]} validation images; layout checked)')


def _launch(launcher: str, gpus: int) -> str:
    return {'local': f'local ({gpus} GPU(s), one process)',
            'torchrun': f'torchrun --nproc_per_node {gpus}',
            'slurm': f'slurm (one array task per job, {gpus} GPU(s) each)'}[launcher]


def _hours(value: float | None) -> str:
    return 'unknown' if value is None else f'{value:.1f}'


def _total(plans: list[JobPlan], field: str, unit: str = '', none: str = 'unknown') -> str:
    known = [getattr(p, field) for p in plans if getattr(p, field) is not None]
    if not known:
        return none
    unknown = len(plans) - len(known)
    return f'{sum(known):.1f}{unit}' + (f' + unknown for {unknown} job(s)' if unknown else '')


def print_plan(*, tables_rows, profile: str, gpus: int, seeds: int, launcher: str,
               work_root: Path, data_roots: dict[str, Path], weights_root: Path,
               rehearsals: Path, device: str | None) -> None:
    """Print the plan of ``tables_rows`` ([(table, rows)]). ``rehearsals``: the folder
    ``rehearse`` wrote its results to; ``device``: the device kind whose rehearsals estimate
    the time (None: any GPU on record)."""
    rehearsals = load_rehearsals(rehearsals)
    print(f'plan ({profile} profile, {seeds} seed(s), {gpus} GPU(s) per job, launcher '
          f'{launcher}); nothing is launched or written')
    plans, cache = [], {}
    for table, rows in tables_rows:
        data_root = data_roots[table.name]
        print(f'{table.name}:')
        print(f'  data: {data_status(profile, data_root, table.data)}')
        in_table = []
        for row in rows:
            for seed in range(seeds):
                p = plan_job(row, seed, profile=profile, gpus=gpus, work_root=work_root,
                             data_root=data_root, weights_root=weights_root, seeds=seeds,
                             cache=cache, rehearsals=rehearsals, device=device)
                in_table.append(p)
                print(f'  {row.id} seed{seed}: {row.config} ({p.state})\n'
                      f'      launcher {_launch(launcher, gpus)}, GPUs {gpus}, batch/GPU '
                      f'{p.batch_per_gpu}, iterations {p.iters}\n'
                      f'      GPU-hours {_hours(p.gpu_hours)}, wall-clock hours '
                      f'{_hours(p.wall_hours)} ({p.speed_source})\n'
                      f'      disk {gb(p.disk_bytes)}: {p.kept_checkpoints} checkpoints x '
                      f'{gb(p.checkpoint_bytes)} ({p.params} params x {BYTES_PER_VALUE} B x '
                      f'(weights + {p.buffers} optimiser buffer(s))) + '
                      f'{LOG_ALLOWANCE // 2 ** 20} MB logs\n'
                      f'      weights {p.weights}\n'
                      f'      data {p.loader}')
        print(f'  {table.name} total: GPU-hours {_total(in_table, "gpu_hours")}, wall-clock '
              f'hours {_total(in_table, "wall_hours")} (jobs one after another)')
        plans += in_table
    hours = _total(plans, 'gpu_hours', ' GPU-hours',
                   'GPU-hours unknown for all (no speed measured yet)')
    missing = sorted({p.row.pretrained_file for p in plans if p.weights.startswith('MISSING')})
    print(f'total: {len(plans)} job(s), {hours}, disk {gb(sum(p.disk_bytes for p in plans))}'
          f', weights missing: {", ".join(missing) or "none"}')
