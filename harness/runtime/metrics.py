"""Per-class IoU of the last evaluation, kept for W&B and the job folder.

mmseg's ``IoUMetric`` prints the per-class table to the log only; ``PerClassIoUMetric`` also
keeps it, and ``RunSummaryHook`` writes it (a file of the job folder, a W&B table) together with
the W&B run summary: final and best single-scale mIoU and the iteration of the best.
"""
from __future__ import annotations

import json
from pathlib import Path

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmseg.evaluation import IoUMetric
from mmseg.registry import HOOKS, METRICS

from ..core.atomic import atomic_write
from ..core.layout import PER_CLASS_FILE, latest_checkpoint
from ..core.state import read_curves


@METRICS.register_module()
class PerClassIoUMetric(IoUMetric):
    """``IoUMetric`` that keeps the per-class IoU (%) of its last evaluation."""

    last_per_class_iou: dict[str, float | None] = {}

    def compute_metrics(self, results: list) -> dict[str, float]:
        intersect = sum(r[0] for r in results)
        union = sum(r[1] for r in results)
        classes = self.dataset_meta['classes']
        self.last_per_class_iou = {  # None: the class is in neither prediction nor label
            name: (100 * float(i / u) if u > 0 else None)
            for name, i, u in zip(classes, intersect, union)}
        return super().compute_metrics(results)


@HOOKS.register_module()
class RunSummaryHook(Hook):
    """After each validation: per-class IoU to the job folder and W&B, and the run summary;
    after a test (an evaluation job): its mIoU in the summary."""

    priority = 'BELOW_NORMAL'

    @staticmethod
    def _write_per_class(runner, evaluator, iteration: int | None) -> dict:
        per_class = next((m.last_per_class_iou for m in evaluator.metrics
                          if isinstance(m, PerClassIoUMetric)), {})
        atomic_write(Path(runner.work_dir, PER_CLASS_FILE),
                     json.dumps({'iter': iteration, 'IoU': per_class}, indent=1), fsync=False)
        return per_class

    def after_train(self, runner) -> None:
        """A job that trained to the end: its last checkpoint becomes a W&B artifact, the one
        its evaluations declare they used (stopped early, it is not the finished model)."""
        backend = runner.visualizer.get_backend('IterationWandbVisBackend')
        if backend is None or runner.iter < runner.max_iters or not is_main_process():
            return
        checkpoint = latest_checkpoint(runner.work_dir)
        if checkpoint is not None and checkpoint.is_file():
            backend.log_checkpoint(str(checkpoint), iter=runner.iter)

    def after_test_epoch(self, runner, metrics=None) -> None:
        """An evaluation job (job_type eval): its per-class IoU to its folder, its mIoU, single-
        or multi-scale, in the summary."""
        # rank 0 owns the W&B run (``experiment`` would start one on any rank) and the files
        if not metrics or 'mIoU' not in metrics or not is_main_process():
            return
        # an evaluation job has no training loop (``runner.iter`` would build one)
        self._write_per_class(runner, runner.test_evaluator, None)
        backend = runner.visualizer.get_backend('IterationWandbVisBackend')
        if backend is None:
            return
        from mmengine.model import BaseTTAModel
        scale = 'ms' if isinstance(runner.model, BaseTTAModel) else 'ss'
        backend.experiment.run.summary.update(
            {f'mIoU_{scale}': float(metrics['mIoU']), f'mAcc_{scale}': float(metrics['mAcc']),
             f'aAcc_{scale}': float(metrics['aAcc'])})

    def after_val_epoch(self, runner, metrics=None) -> None:
        if not metrics or 'mIoU' not in metrics or not is_main_process():
            return
        miou, iteration = float(metrics['mIoU']), runner.iter
        _, earlier = read_curves(runner.work_dir)  # evaluations before a restart count too
        earlier = earlier[earlier.index < iteration]
        best = (miou, iteration)
        if len(earlier) and earlier['mIoU'].max() > miou:
            best = (float(earlier['mIoU'].max()), int(earlier['mIoU'].idxmax()))
        per_class = self._write_per_class(runner, runner.val_evaluator, iteration)
        backend = runner.visualizer.get_backend('IterationWandbVisBackend')
        if backend is None:
            return
        wandb = backend.experiment
        wandb.run.summary.update({'final_mIoU_ss': miou, 'final_iter': iteration,
                                  'best_mIoU_ss': best[0], 'best_iter': best[1]})
        rows = [[name, iou] for name, iou in per_class.items() if iou is not None]
        wandb.log({'per_class_iou': wandb.Table(columns=['class', 'IoU'], data=rows),
                   'iter': iteration})
