"""Row spec + profile -> the mmengine config of one job.

``full`` is the row's config as the paper ran it (real ADE20K, pretrained weights, 160k
iterations, total batch 8). ``smoke`` applies a size-and-schedule override to the very same
config: tiny encoder/decoder, 64-pixel crops, tens of iterations on the CPU, random init, on the
synthetic ADE20K copy. Everything else (heads, losses, optimiser type, augmentations, sliding
evaluation) stays the row's own, so the smoke run exercises the recipe's code path.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from mmengine.config import Config
from mmengine.config import config as config_module

from .spec import REPO_ROOT, Row

PROFILES = ('smoke', 'full')
TOTAL_BATCH = 8
FULL_MAX_ITERS = 160000  # the recipe's schedule (experiments/configs/_base_/segmenter_recipe.py)
DEFAULT_ADE20K_ROOT = REPO_ROOT / 'data' / 'ade' / 'ADEChallengeData2016'


@dataclasses.dataclass(frozen=True)
class SmokeSize:
    width_divisor: int = 8  # ViT-Ti/S/B/L widths 192/384/768/1024 -> 24/48/96/128
    depth_divisor: int = 6  # 12 layers -> 2, ViT-L's 24 -> 4; heads keep their count
    crop: int = 64  # the batch stays the paper's 8: smaller ones left mask rows untrained
    max_iters: int = 100
    first_val: int = 5  # two evaluations: early (iteration 5) and at the end
    checkpoint_interval: int = 20
    log_interval: int = 10
    # Random init and a hundred iterations: the paper's lr (1e-3) barely moves a fresh model, so
    # the smoke schedule starts higher. Same optimiser and poly decay as the row.
    lr: float = 0.02


SMOKE = SmokeSize()


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """Everything that identifies one job (a row, a profile, a seed) and where it lives."""
    row: Row
    profile: str
    seed: int
    work_dir: Path
    data_root: Path
    gpus: int = 1  # processes (GPUs) sharing the total batch of 8
    weights_root: Path = REPO_ROOT  # the spec's weight paths (weights/...) are relative to it
    wandb_project: str = 'segmenter-repro'
    wandb_run_id: str | None = None
    checkpoint: Path | None = None  # evaluate this trained model instead of training
    multi_scale: bool = False  # with checkpoint: the official multi-scale + flip evaluation
    amp: str | None = None  # 'bf16' / 'fp16' / 'tf32' training precision (paper: fp32)


def _set_crop(pipeline: list[dict], crop: int) -> None:
    """Scale the ADE20K resize/crop steps to ``crop`` (keeping the 4:1 long/short scale)."""
    for step in pipeline:
        if step['type'] in ('RandomResize', 'Resize') and 'scale' in step:
            step['scale'] = (4 * crop, crop)
        if step['type'] == 'RandomCrop':
            step['crop_size'] = (crop, crop)


def _apply_smoke(cfg: Config, size: SmokeSize) -> None:
    crop = cfg.crop_size = (size.crop, size.crop)
    model = cfg.model
    model.pretrained = None
    model.backbone.init_cfg = None
    width = model.backbone.embed_dims // size.width_divisor
    model.backbone.update(img_size=crop, embed_dims=width,
                          num_layers=model.backbone.num_layers // size.depth_divisor)
    head = model.decode_head
    head.update(in_channels=width, channels=width)
    if 'embed_dims' in head:  # mask transformer
        head.update(embed_dims=width)
    model.data_preprocessor.size = crop
    model.test_cfg.update(crop_size=crop, stride=(size.crop * 3 // 4,) * 2)

    _set_crop(cfg.train_dataloader.dataset.pipeline, size.crop)
    for loader in ('val_dataloader', 'test_dataloader'):
        _set_crop(cfg[loader].dataset.pipeline, size.crop)
        cfg[loader].update(num_workers=0, persistent_workers=False)
    cfg.train_dataloader.update(num_workers=0, persistent_workers=False)

    cfg.optim_wrapper.optimizer.lr = size.lr
    cfg.param_scheduler[0].update(end=size.max_iters)
    # evaluate at first_val, then only at the end (mmengine always validates at max_iters)
    cfg.train_cfg.update(max_iters=size.max_iters, val_interval=size.first_val,
                         # mmengine switches interval when iter + 1 reaches the milestone
                         dynamic_intervals=[(size.first_val + 2, size.max_iters + 1)])
    cfg.default_hooks.checkpoint.update(interval=size.checkpoint_interval)
    cfg.default_hooks.logger.interval = size.log_interval
    cfg.env_cfg.update(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))


def _apply_full(cfg: Config, job: JobSpec) -> None:
    cfg.model.pretrained = str(Path(job.weights_root) / job.row.pretrained_file)


MULTI_SCALE_RATIOS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)


def _use_multi_scale(cfg: Config, crop: int) -> None:
    """Official multi-scale evaluation: the test image (short side = crop) at each ratio, with
    and without flip, logits averaged. mmseg's stock ``tta_pipeline`` scales the original image
    instead of the crop-sized one, so the pipeline is built here from the row's crop."""
    resizes = [dict(type='Resize', scale=(int(4 * crop * r), int(crop * r)), keep_ratio=True)
               for r in MULTI_SCALE_RATIOS]
    flips = [dict(type='RandomFlip', prob=0.0, direction='horizontal'),
             dict(type='RandomFlip', prob=1.0, direction='horizontal')]
    cfg.test_dataloader.dataset.pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='TestTimeAug', transforms=[resizes, flips, [dict(type='LoadAnnotations')],
                                             [dict(type='PackSegInputs')]])]
    cfg.model = dict(type='BatchedSegTTAModel', module=cfg.model)


def _find_base_configs_directly() -> None:
    """mmengine resolves each ``mmseg::`` base by first loading all ~200 of mmseg's model
    metafiles (YAML) in search of a model config of that name. For ``_base_/`` files that
    search always fails (model configs are ``<model>/<name>``), and mmengine then takes the
    file from the package's config folder: failing it at once saves ~0.2 s per base, ~0.7 s
    per row config (measured), paid by every job and by the pre-launch check of every row."""
    if getattr(config_module._get_external_cfg_path, 'skips_bases', False):
        return
    search = config_module._get_external_cfg_path

    def external_cfg_path(package_path: str, cfg_file: str) -> str:
        if cfg_file.startswith('_base_/'):
            raise ValueError(cfg_file)  # what mmengine's search raises: use the config folder
        return search(package_path, cfg_file)

    external_cfg_path.skips_bases = True
    external_cfg_path.__wrapped__ = search
    config_module._get_external_cfg_path = external_cfg_path


_find_base_configs_directly()


def build_config(job: JobSpec) -> Config:
    """The resolved mmengine config of ``job``, ready for ``Runner.from_cfg``."""
    if job.profile not in PROFILES:
        raise ValueError(f"unknown profile '{job.profile}' (profiles: {', '.join(PROFILES)})")
    if job.gpus < 1 or TOTAL_BATCH % job.gpus:
        raise ValueError(f'{job.gpus} processes do not divide the total batch {TOTAL_BATCH}')
    cfg = Config.fromfile(job.row.config_path)
    # the total batch stays 8 however many processes share it (smoke and full alike)
    cfg.train_dataloader.batch_size = TOTAL_BATCH // job.gpus
    if job.profile == 'smoke':
        _apply_smoke(cfg, SMOKE)
    else:
        _apply_full(cfg, job)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = str(job.data_root)

    cfg.work_dir = str(job.work_dir)
    cfg.randomness = dict(seed=job.seed)
    cfg.resume = True  # mmengine resumes from work_dir/last_checkpoint when there is one
    if job.checkpoint is not None:  # evaluation: the job loads the checkpoint itself, strictly
        cfg.model.pretrained = None
        cfg.resume = False
        if job.multi_scale:
            _use_multi_scale(cfg, job.row.crop_size if job.profile == 'full' else SMOKE.crop)
    wandb = dict(
        type='IterationWandbVisBackend',
        init_kwargs=dict(
            project=job.wandb_project, group=job.row.table, name=f'{job.row.id}-seed{job.seed}',
            tags=[job.row.table, job.profile, job.row.id],
            job_type='train' if job.checkpoint is None else 'eval',
            id=job.wandb_run_id, resume='allow', reinit='finish_previous'),
        # the run's provenance (git, versions, hardware, dataset) is read from job.json when
        # the run starts: kept out of the config, whose pretty-printing (yapf, in every
        # checkpoint) takes ~1.5 s per save with it nested inside
        meta_file=None if job.work_dir is None else str(Path(job.work_dir) / 'job.json'))
    # save_dir = the job folder, not mmengine's per-start <timestamp>/ folder: a resumed job
    # appends to the same vis_data/scalars.json and W&B run instead of starting new ones.
    # keeps per-class IoU and the W&B summary (final/best mIoU) of every validation
    cfg.val_evaluator = dict(type='PerClassIoUMetric', iou_metrics=['mIoU'])
    cfg.test_evaluator = cfg.val_evaluator
    # PreemptionHook: a stop signal ends training with a checkpoint; torch RNG in checkpoints
    cfg.custom_hooks = [dict(type='RunSummaryHook'), dict(type='PreemptionHook')]
    if job.amp:
        from .precision import apply_amp
        apply_amp(cfg, job.amp)
    cfg.visualizer = dict(type='SegLocalVisualizer', name='visualizer', save_dir=str(job.work_dir),
                          vis_backends=[dict(type='LocalVisBackend'), wandb])
    return cfg
