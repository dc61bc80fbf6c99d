"""The recipe fingerprint: a hash of a job's effective config reduced to what changes its
results (model, pretrained file, data pipeline, optimiser, schedule, batch, seed, precision,
evaluation protocol), leaving out what does not (work dir, data root, W&B ids, resume flags,
logging, loader workers: the data order is a function of seed and position, not of them)."""
from __future__ import annotations

from pathlib import Path

from mmengine.config import Config

from ..core.result import differences, view_fingerprint  # noqa: F401 - re-exported

# the sections mmengine's Runner builds a job from that decide its numbers
RECIPE_KEYS = ('model', 'train_dataloader', 'val_dataloader', 'test_dataloader',
               'optim_wrapper', 'param_scheduler', 'train_cfg', 'val_cfg', 'test_cfg',
               'val_evaluator', 'test_evaluator', 'randomness', 'custom_hooks', 'tta_model',
               'tta_pipeline', 'custom_imports')
# where a machine or a start differs and the results do not
MACHINE_KEYS = {'data_root', 'num_workers', 'persistent_workers', 'pin_memory'}
# hooks left out of the view: RunSummaryHook and ProgressHook only report; PreemptionHook does
# change a resumed job's numbers (it restores the RNG state its checkpoint saved), but every
# job config has it alike, so it tells no two recipes apart, and the fingerprints frozen by
# jobs so far were taken without it
UNCOMPARED_HOOKS = {'RunSummaryHook', 'PreemptionHook', 'ProgressHook'}


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k not in MACHINE_KEYS}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def recipe_view(cfg: Config, weights_root: Path | None = None, processes: int = 1) -> dict:
    """The part of ``cfg`` that decides a job's results, as plain JSON values; the pretrained
    file as the spec names it (relative to ``weights_root``), not where this machine keeps it;
    the batch as the total of the ``processes`` that share it (a job resumed on another
    number of GPUs trains the same recipe: its data order does not depend on them)."""
    whole = cfg.to_dict()
    view = {key: _plain(whole[key]) for key in RECIPE_KEYS if key in whole}
    if 'train_dataloader' in view:
        view['train_dataloader']['batch_size'] *= processes
    view['custom_hooks'] = [h for h in view.get('custom_hooks', [])
                            if h.get('type') not in UNCOMPARED_HOOKS]
    pretrained = view.get('model', {}).get('pretrained')
    if pretrained and weights_root is not None:
        try:
            view['model']['pretrained'] = str(Path(pretrained).relative_to(weights_root))
        except ValueError:
            pass
    return view


fingerprint = view_fingerprint  # the core's: the report computes the seed-free one alike
