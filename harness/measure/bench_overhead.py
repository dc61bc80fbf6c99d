"""The harness's own cost, measured by the bench: one smoke job through ``python -m harness run``
against the same model, data and schedule on a bare mmengine Runner (fresh processes,
alternating), and a stopwatch on every hook and W&B call inside the training loop of each.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from ..core.layout import CONFIG_FILE, REPO_ROOT, job_dir
from ..core.state import read_curves
from .bench_cases import in_child
from .bench_result import HookTimes, Overhead, Spread


def stock_runner_config(job_config: Path, work_dir: Path):
    """The harness job's dumped config with everything the harness adds to the training loop
    taken out: no W&B backend, none of its hooks (run summary, preemption), mmengine's own
    CheckpointHook and IoUMetric. Same model, data, schedule and seed."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(job_config))
    cfg.work_dir = str(work_dir)
    cfg.custom_hooks = []
    cfg.default_hooks.checkpoint.type = 'CheckpointHook'
    cfg.visualizer.update(save_dir=str(work_dir), vis_backends=[dict(type='LocalVisBackend')])
    cfg.val_evaluator = cfg.test_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
    return cfg


def run_stock_runner(job_config: str, work_dir: str) -> None:
    """A bare mmengine Runner on ``stock_runner_config`` (the bench's baseline process)."""
    from mmengine.runner import Runner
    Runner.from_cfg(stock_runner_config(Path(job_config), Path(work_dir))).train()


def hook_seconds(job_config: Path, work_dir: Path, stock: bool) -> HookTimes:
    """Train the job's config in this process (``stock``: without the harness's parts) with a
    stopwatch on every hook call and every W&B backend call: seconds per hook class, and the
    whole ``train()``. The harness's per-iteration work is measured directly, free of the
    model's run-to-run noise."""
    import collections
    import functools

    from mmengine.config import Config
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    from ..runtime.safe_resume import enable_safe_resume
    from ..runtime.wandb_backend import IterationWandbVisBackend
    enable_safe_resume()
    if stock:
        cfg = stock_runner_config(job_config, work_dir)
    else:
        cfg = Config.fromfile(str(job_config))
        cfg.work_dir = str(work_dir)
        cfg.visualizer.save_dir = str(work_dir)
    # mmengine keeps one visualizer per name in the process: this run's own
    cfg.visualizer.name = f'bench-hooks-{Path(work_dir).name}-{time.monotonic_ns()}'
    runner = Runner.from_cfg(cfg)
    spent = collections.defaultdict(float)

    def timed(func, key):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - start
        return wrapper

    wandb = [b for b in runner.visualizer._vis_backends.values()
             if isinstance(b, IterationWandbVisBackend)]
    for backend in wandb:  # called from inside mmengine's LoggerHook: counted apart from it
        for name in ('add_config', 'add_scalars', 'close'):
            setattr(backend, name, timed(getattr(backend, name), 'W&B backend (harness)'))
    for hook in runner._hooks:
        owner = 'harness' if type(hook).__module__.startswith('harness.') else 'mmengine'
        for stage in Hook.stages:
            setattr(hook, stage, timed(getattr(hook, stage),
                                       f'{type(hook).__name__} ({owner})'))
    start = time.perf_counter()
    runner.train()
    total = time.perf_counter() - start
    if wandb:  # LoggerHook's own time without the W&B calls made inside it
        key = next(k for k in spent if k.startswith('LoggerHook'))
        spent[key] -= spent['W&B backend (harness)']
    return HookTimes(train_seconds=total, iterations=cfg.train_cfg.max_iters,
                     hooks=dict(sorted(spent.items(), key=lambda kv: -kv[1])))


def harness_overhead(repeats: int, work: Path) -> Overhead:
    """One smoke job through ``python -m harness run`` against the same model, data and
    schedule on a bare mmengine Runner without the harness's hooks and W&B logging (both fresh
    processes, alternating). Whole process and logged training-iteration times; the fixed cost
    per job is what the whole-process difference leaves after the per-iteration difference."""
    from ..assets.synthetic import ensure_dataset
    data = ensure_dataset(work / 'data' / 'ADEChallengeData2016')
    env = {**os.environ, 'PYTHONPATH': str(REPO_ROOT), 'WANDB_MODE': 'offline',
           'WANDB_SILENT': 'true', 'CUDA_VISIBLE_DEVICES': ''}
    bare = ('import sys; from harness.measure.bench_overhead import run_stock_runner as r; '
            'r(*sys.argv[1:])')
    times, iter_s = {'harness': [], 'bare': []}, {'harness': [], 'bare': []}
    for rep in range(repeats):
        root = work / f'harness{rep}'
        start = time.perf_counter()
        subprocess.run([sys.executable, '-m', 'harness', 'run', '--table', 'table3', '--rows',
                        'seg-t-16', '--profile', 'smoke', '--no-report', '--work-root',
                        str(root), '--data-root', str(data)], cwd=REPO_ROOT, env=env,
                       check=True, capture_output=True)
        times['harness'].append(time.perf_counter() - start)
        job = job_dir(root, 'smoke', 'table3', 'seg-t-16', 0)
        start = time.perf_counter()
        subprocess.run([sys.executable, '-c', bare, str(job / CONFIG_FILE),
                        str(work / f'bare{rep}')], cwd=REPO_ROOT, env=env, check=True,
                       capture_output=True)
        times['bare'].append(time.perf_counter() - start)
        for name, folder in (('harness', job), ('bare', work / f'bare{rep}')):
            # mmengine's logged training-iteration times (averaged per log interval)
            iter_s[name] += read_curves(folder)[0]['time'].dropna().tolist()
    hooks = {name: in_child(hook_seconds, job / CONFIG_FILE, work / f'hooks-{name}',
                            name == 'bare') for name in ('harness', 'bare')}
    iterations = hooks['harness'].iterations  # the job config's max_iters
    whole = {k: Spread.of(v) for k, v in times.items()}
    per_iter = {k: Spread.of(v) for k, v in iter_s.items()}
    loop = hooks['bare'].train_seconds
    return Overhead(
        harness=whole['harness'], bare=whole['bare'],
        ratio=whole['harness'].median / whole['bare'].median,
        iteration_seconds=per_iter,
        iteration_ratio=per_iter['harness'].median / per_iter['bare'].median,
        iteration_ratio_min=per_iter['harness'].min / per_iter['bare'].min,
        iterations=iterations, hook_seconds=hooks,
        # the harness's own work in the loop, measured: hook + W&B time beyond the bare run's
        hooks_share=(sum(hooks['harness'].hooks.values())
                     - sum(hooks['bare'].hooks.values())) / loop,
        hooks_share_without_checkpoints=(_loop_seconds(hooks['harness'])
                                         - _loop_seconds(hooks['bare'])) / loop,
        fixed_seconds=(whole['harness'].median - whole['bare'].median
                       - iterations * (per_iter['harness'].median - per_iter['bare'].median)))


def _loop_seconds(timed: HookTimes) -> float:
    """Hook and W&B seconds of a ``hook_seconds`` run, checkpoint saving left out."""
    return sum(sec for name, sec in timed.hooks.items() if 'CheckpointHook' not in name)

