"""Preemption: a stop signal ends training with a checkpoint of the current iteration (docs/
design.md, "Stopping is a checkpoint"). While the training loop runs, the job's signal handler
only sets a flag (``request_stop``); ``PreemptionHook`` saves a checkpoint once the current
iteration is done and raises ``Stopped``, which the job records as 'interrupted'.

The hook also keeps the torch RNG state in every checkpoint: the data after a resume is that of
an uninterrupted run (``sampling``), but mmengine leaves torch's RNG where model building left
it, so dropout / drop-path masks after a resume would differ.
"""
from __future__ import annotations

from pathlib import Path

import torch
from mmengine.dist import all_reduce, get_world_size, is_main_process
from mmengine.hooks import CheckpointHook, Hook
from mmseg.registry import HOOKS

from ..core.atomic import atomic_write
from ..core.layout import POINTER, checkpoint_name

RNG_KEY = 'harness_rng'


class Stopped(SystemExit):
    """A stop signal: unwinds like Ctrl-C, the job's state says 'interrupted'."""

    def __init__(self, signum: int, iteration: int | None = None, checkpoint: str | None = None):
        super().__init__(128 + signum)
        self.signum, self.iteration, self.checkpoint = signum, iteration, checkpoint

    def __str__(self):
        import signal
        name = signal.Signals(self.signum).name
        if self.iteration is None:
            return f'stopped by {name}'
        return f'stopped by {name} at iteration {self.iteration} (checkpoint {self.checkpoint})'


_state = {'armed': False, 'signum': None}


def request_stop(signum: int) -> bool:
    """From a signal handler: True when nothing more is to be done now (the training loop will
    stop with a checkpoint, or a stop is already unwinding: a second signal must not cut the
    recording of the first short)."""
    first = _state['signum'] is None
    _state['signum'] = _state['signum'] or signum
    return _state['armed'] or not first


def _rng_state() -> dict:
    state = {'torch': torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def _save_stop_checkpoint(runner, iteration: int, filename: str) -> None:
    """Save the checkpoint of a stop as the checkpoint hook saves its periodic ones (a
    temporary name and a rename, the pointer likewise), counted among the ``max_keep_ckpts``
    it keeps: a job stopped again and again keeps no more checkpoints than one never stopped."""
    hook = next((h for h in runner.hooks if isinstance(h, CheckpointHook)), None)
    if hook is not None and not hook.by_epoch:
        # the hook's own save: it drops the oldest kept checkpoint and notes this one
        hook._save_checkpoint_with_step(runner, iteration,
                                        dict(epoch=runner.epoch, iter=iteration))
    elif is_main_process():
        runner.save_checkpoint(runner.work_dir, filename, save_optimizer=True,
                               save_param_scheduler=True, by_epoch=False,
                               backend_args=dict(backend='atomic_local'))
        atomic_write(Path(runner.work_dir, POINTER), filename)


@HOOKS.register_module()
class PreemptionHook(Hook):
    """Stop after the current iteration with a checkpoint when a stop signal came; carry the
    torch RNG state through checkpoints."""

    priority = 'VERY_LOW'  # after the CheckpointHook and the logger of the same iteration

    def __init__(self):
        self._pending_rng = None

    def before_train(self, runner) -> None:
        _state['armed'] = True

    def after_train(self, runner) -> None:
        _state['armed'] = False

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint[RNG_KEY] = _rng_state()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        # applied at the first iteration: the train loader starts again after loading, and
        # torch's DataLoader draws its workers' base seed from torch's RNG when it starts
        self._pending_rng = checkpoint.get(RNG_KEY)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._pending_rng is not None:
            torch.set_rng_state(self._pending_rng['torch'])
            if 'cuda' in self._pending_rng and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(self._pending_rng['cuda'])
            self._pending_rng = None

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        signum = _state['signum'] or 0
        if get_world_size() > 1:  # every rank stops at the same iteration, or DDP hangs
            flag = torch.tensor([signum], dtype=torch.int64)
            all_reduce(flag, op='max')
            signum = int(flag.item())
        if not signum:
            return
        iteration = runner.iter + 1  # the loop counts this iteration after the hooks
        filename = checkpoint_name(iteration)
        path = Path(runner.work_dir) / filename
        if not path.is_file():  # the CheckpointHook may have saved it
            _save_stop_checkpoint(runner, iteration, filename)
        runner.logger.info(f'Stop signal: saved {filename}, stopping')
        _state['armed'] = False
        raise Stopped(signum, iteration, filename)
