"""Progress of a training job, for the person waiting on it.

Every ``interval`` iterations (and at the last) ``ProgressHook`` prints one line on the job's
output, ``progress: iter 40/100 (40%), loss 2.3141, mIoU 12.30, 0:01:20 left``, which the local
launcher shows on the terminal, and keeps the same figures in the job's state, where
``harness status`` reads them (``harness.layout`` formats both). The time left is mmengine's
own estimate (``IterTimerHook``'s ``eta``: the mean iteration time of this start times the
iterations to go).
"""
from __future__ import annotations

import time

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from ..core.state import PROGRESS_PREFIX, progress_text, read_curves, write_state


@HOOKS.register_module()
class ProgressHook(Hook):
    """One progress line every ``interval`` training iterations; the same in the job's state."""

    priority = 'LOW'  # after IterTimerHook (NORMAL) has updated the eta of this iteration

    def __init__(self, interval: int = 50):
        self.interval = interval
        self.miou = None

    def before_train(self, runner) -> None:
        _, val = read_curves(runner.work_dir)  # a resumed job: its last evaluation so far
        if len(val) and 'mIoU' in val:
            self.miou = float(val['mIoU'].iloc[-1])

    def after_val_epoch(self, runner, metrics=None) -> None:
        if metrics and 'mIoU' in metrics:
            self.miou = float(metrics['mIoU'])

    @staticmethod
    def _loss(runner) -> float | None:
        """The loss as mmengine's log shows it: the mean over the log processor's window."""
        hub = runner.message_hub
        if 'train/loss' not in hub.log_scalars:
            return None
        window = runner.log_processor.window_size
        loss = hub.get_scalar('train/loss')
        return float(loss.mean(window) if isinstance(window, int) else loss.mean())

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        done = runner.iter + 1
        if not is_main_process() or not (done % self.interval == 0 or done == runner.max_iters):
            return
        progress = {'iter': done, 'max_iters': runner.max_iters, 'loss': self._loss(runner),
                    'mIoU': self.miou,
                    'eta_s': runner.message_hub.get_info('eta'), 'at': time.time()}
        write_state(runner.work_dir, progress=progress)
        print(PROGRESS_PREFIX + progress_text(progress), flush=True)
