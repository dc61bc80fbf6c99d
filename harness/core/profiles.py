"""The profiles a job runs under and the values every stage shares.

The paper's total batch and schedule are the recipe's (``experiments/configs/_base_/
segmenter_recipe.py``), read from its text here so that the core needs no mmengine: change them
there and every stage follows."""
from __future__ import annotations

import ast
import dataclasses

from .layout import REPO_ROOT

PROFILES = ('smoke', 'full')
PRECISIONS = ('bf16', 'fp16', 'tf32')  # reduced-precision training; the paper trained in fp32
# the precisions a CPU cannot train in, and what they need
GPU_ONLY_PRECISIONS = {
    'fp16': 'a GPU (mmengine scales fp16 losses on GPUs only)',
    'tf32': 'an NVIDIA GPU (Ampere or later: TF32 is a tensor-core format; CPUs compute fp32 '
            'as is)'}
LAUNCHERS = ('local', 'torchrun', 'slurm')
DEFAULT_WANDB_PROJECT = 'segmenter-repro'
RECIPE = REPO_ROOT / 'experiments' / 'configs' / '_base_' / 'segmenter_recipe.py'
# the official multi-scale evaluation: the test image at each ratio of the crop, and flipped
MULTI_SCALE_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def _recipe_constants(names: tuple[str, ...]) -> dict:
    found = {}
    for node in ast.parse(RECIPE.read_text()).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id in names:
            found[node.targets[0].id] = ast.literal_eval(node.value)
    missing = set(names) - set(found)
    assert not missing, f'{RECIPE} no longer sets {sorted(missing)} as a literal'
    return found


_RECIPE = _recipe_constants(('total_batch_size', 'max_iters'))
# ADE20K's batch; a job divides its own dataset's (experiments/datasets.yaml recipe.batch)
TOTAL_BATCH: int = _RECIPE['total_batch_size']
FULL_MAX_ITERS: int = _RECIPE['max_iters']  # the paper's schedule


@dataclasses.dataclass(frozen=True)
class SmokeSize:
    """The smoke profile's sizes: the row's own config, scaled down to run on a CPU."""
    width_divisor: int = 8  # ViT-Ti/S/B/L widths 192/384/768/1024 -> 24/48/96/128
    depth_divisor: int = 6  # 12 layers -> 2, ViT-L's 24 -> 4; heads keep their count
    crop: int = 64  # the batch stays the dataset's (8, 16): smaller ones left mask rows untrained
    max_iters: int = 100
    first_val: int = 5  # two evaluations: early (iteration 5) and at the end
    checkpoint_interval: int = 20
    log_interval: int = 10
    # Random init and a hundred iterations: the paper's lr (1e-3) barely moves a fresh model, so
    # the smoke schedule starts higher. Same optimiser and poly decay as the row.
    lr: float = 0.02


SMOKE = SmokeSize()


def schedule_length(profile: str, max_iters: int | None = None,
                    full_iters: int | None = None) -> int:
    """The iterations a job of ``profile`` trains: ``max_iters`` when shortened; the full
    profile's are ``full_iters`` (its dataset's schedule), ADE20K's recipe by default."""
    return int(max_iters or (SMOKE.max_iters if profile == 'smoke'
                             else full_iters or FULL_MAX_ITERS))
