"""The rehearsals' result: ``rehearsal.json`` holds one run per device kind and precision, one
entry per row (a later rehearsal of a row replaces its entry), and ``rehearsal.md`` is rendered
from all of them. ``plan`` reads the fp32 runs for its GPU-hours.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from .measurement_files import Record, load, save

FORMAT = 1
NAME = 'rehearsal'
DEFAULT_ITERS = 4  # the first iteration warms up; the others are the steady state


class PeakMemory(Record):
    bytes: int
    kind: str
    device_total: int | None = None  # GPUs only: the device's memory


class RowRehearsal(Record):
    """What one row's rehearsal measured: its jobs' own figures, the pipeline's rate, and why
    the row would be a problem at full scale (``flags``)."""
    batch: int
    real_batch: int
    iters: int
    crop: int
    weights: str
    weights_loaded: str
    train_s_per_iter: float | None
    train_data_s_per_iter: float | None
    train_first_iter_s: float
    eval_s_per_image: float | None
    eval_images: int | None
    eval_windows: int | None
    peak_memory: PeakMemory
    checkpoint_bytes: int
    checkpoint_save_s: float | None
    loss: float | None
    train_dir: str
    images_per_s_per_worker: float
    samples: int
    workers: int
    wall_s: float
    flags: list[str] = []
    resumed: str | None = None
    eval_ms_s_per_image: float | None = None


class RowFailure(Record):
    error: str  # one line
    batch: int
    flags: list[str] = []


class Substitutions(Record):
    """What the rehearsal put in place of the real job's inputs."""
    data: str
    weights: str
    iterations: int
    batch: int | str


class RehearsalMachine(Record):
    cpu: str
    cpu_count: int
    torch_threads: int
    versions: dict[str, str | None]
    memory: int | None = None  # CPU runs: the machine's memory
    gpu: str | None = None
    gpu_memory: int | None = None
    cuda: str | None = None

    @classmethod
    def of(cls, device: str) -> 'RehearsalMachine':
        """This machine, from the harness's one description of it."""
        from ..launch.provenance import hardware, package_versions
        hw = hardware()
        gpu = device != 'cpu' and bool(hw['gpus'])
        return cls(cpu=hw['cpu'], cpu_count=hw['cpu_count'], torch_threads=hw['torch_threads'],
                   versions=package_versions(),
                   memory=None if gpu else hw['memory'],
                   gpu=hw['gpus'][0] if gpu else None,
                   gpu_memory=hw['gpu_memory'][0] if gpu else None,
                   cuda=hw['cuda'] if gpu else None)


class RehearsalRun(Record):
    device: str  # the device kind: cpu, or cuda: <GPU model>
    precision: str
    machine: RehearsalMachine
    date: str
    command: str
    substitutions: Substitutions
    rows: dict[str, RowRehearsal | RowFailure] = {}
    format: Literal[FORMAT] = FORMAT

    @property
    def failed(self) -> list[str]:
        """The rows (table/row) whose rehearsal failed."""
        return [key for key, entry in self.rows.items() if isinstance(entry, RowFailure)]


Rehearsals = dict[str, dict[str, RehearsalRun]]  # device kind -> precision -> run


def loader_rates(entry: RowRehearsal, workers: int) -> tuple[float, float] | None:
    """(images/s ``workers`` loader workers deliver at the rehearsed pipeline's rate, images/s
    the rehearsed training step consumes); None without both measurements. No worker: the
    training process loads, at one worker's rate."""
    step, rate = entry.train_s_per_iter, entry.images_per_s_per_worker
    if not (step and rate):
        return None
    return rate * max(workers, 1), entry.batch / step


def flags(entry: RowRehearsal, machine: RehearsalMachine) -> list[str]:
    """Why a row would be a problem at full scale: data-bound, or no fit in memory."""
    found = []
    rates = loader_rates(entry, entry.workers) if entry.workers else None
    if rates and rates[0] < rates[1]:
        found.append(f'data-bound: {entry.workers} workers x {entry.images_per_s_per_worker:.1f} '
                     f'images/s < {rates[1]:.1f} images/s the step consumes')
    total = entry.peak_memory.device_total or machine.memory
    # a job that does not fit fails (out of memory) and is flagged where it fails; one that
    # fits with little room left would not survive a longer crop or a larger batch
    if total and entry.peak_memory.bytes > 0.9 * total:
        found.append(f'near the device memory: peak {entry.peak_memory.bytes / 2 ** 30:.1f} of '
                     f'{total / 2 ** 30:.1f} GB')
    if entry.batch != entry.real_batch:
        found.append(f'memory at the real batch {entry.real_batch} not measured (batch '
                     f'{entry.batch})')
    return found


def load_rehearsals(folder: Path) -> Rehearsals:
    """The rehearsals on record in ``folder`` in the current format ({} when none)."""
    return load(folder / f'{NAME}.json', RehearsalRun, depth=1, command='rehearse')


def write_rehearsal(run: RehearsalRun, folder: Path) -> None:
    """Merge ``run`` into the record (its rows replace those of an earlier run of the same
    device kind and precision) and render the report from everything on record."""
    results = load_rehearsals(folder)
    runs = results.setdefault(run.device, {})
    earlier = runs[run.precision].rows if run.precision in runs else {}
    runs[run.precision] = run.model_copy(update={'rows': {**earlier, **run.rows}})
    save(folder, NAME, results, markdown(results))


def gb(n: float | None) -> str:
    return '—' if n is None else f'{n / 2 ** 30:.2f} GB'


def _num(value: float | None, fmt: str = '.2f') -> str:
    return '—' if value is None else format(value, fmt)


def markdown(results: Rehearsals) -> str:
    lines = ['# Rehearsals: every row\'s full-profile job at its real size',
             '',
             'Made by `make rehearse` (`python -m harness rehearse`). Each row ran the job '
             '`run --profile full` launches, for a few iterations, with the substitutions '
             'listed per run; the figures are what the job processes measured of themselves '
             '(mmengine\'s timers, data loading included). `plan` takes GPU-hours from the '
             'fp32 run of a GPU whose rows ran at the real batch.', '']
    for kind, runs in results.items():
        lines += [f'## {kind}', '']
        for precision, run in runs.items():
            m, subs = run.machine, run.substitutions
            lines += [f'### {precision} ({run.date})', '',
                      f'- machine: {m.gpu or m.cpu}'
                      + (f' ({gb(m.gpu_memory)}, CUDA {m.cuda})' if m.gpu
                         else f' ({m.cpu_count} cores, {gb(m.memory)})')
                      + ', ' + ', '.join(f'{k} {v}' for k, v in m.versions.items()),
                      f'- substitutions: data {subs.data}; weights {subs.weights}; '
                      f'{subs.iterations} iterations; per-GPU batch {subs.batch}',
                      f'- command: `{run.command}`', '',
                      '| row | batch | s/iter (steady) | first iter s | data wait s/iter | '
                      'pipeline img/s/worker x workers | eval s/img (ss) | windows/img | '
                      'eval s/img (ms) | peak memory | checkpoint | save s | row wall s | flags |',
                      '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|']
            for key, e in run.rows.items():
                lines.append(_row_line(key, e))
            lines.append('')
    return '\n'.join(lines) + '\n'


def _row_line(key: str, e: RowRehearsal | RowFailure) -> str:
    if isinstance(e, RowFailure):
        return (f'| {key} | {e.batch} | FAILED: {e.error} |' + ' |' * 10
                + f" {'; '.join(e.flags) or '—'} |")
    windows = e.eval_windows / e.eval_images if e.eval_images else None
    return (f'| {key} | {e.batch} | {_num(e.train_s_per_iter)} | '
            f"{_num(e.train_first_iter_s)} | {_num(e.train_data_s_per_iter, '.3f')} "
            f"| {_num(e.images_per_s_per_worker, '.1f')} x {e.workers} | "
            f"{_num(e.eval_s_per_image)} | {_num(windows, '.1f')} | "
            f'{_num(e.eval_ms_s_per_image)} | {gb(e.peak_memory.bytes)} '
            f'({e.peak_memory.kind}) | {gb(e.checkpoint_bytes)} | '
            f"{_num(e.checkpoint_save_s)} | {_num(e.wall_s, '.0f')} | "
            f"{'; '.join(e.flags) or 'none'} |")
