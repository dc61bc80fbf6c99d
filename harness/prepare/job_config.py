"""Job request -> the mmengine config of one job (data, schedule, seed, resume, evaluation,
W&B, hooks, precision).

``full`` is the row's config as the paper ran it (real ADE20K, pretrained weights, 160k
iterations, total batch 8). ``smoke`` applies a size-and-schedule override to the very same
config: tiny encoder/decoder, 64-pixel crops, tens of iterations on the CPU, random init, on the
synthetic ADE20K copy. Everything else (heads, losses, optimiser type, augmentations, sliding
evaluation) stays the row's own, so the smoke run exercises the recipe's code path.
"""
from __future__ import annotations

from pathlib import Path

from mmengine.config import Config

from ..core.allocation import loader_workers
from ..core.errors import SpecError, StateError
from ..core.layout import FROZEN_CONFIG, STATE_FILE
from ..core.profiles import MULTI_SCALE_RATIOS, SMOKE, SmokeSize
from ..core.request import JobRequest
from . import mmengine_patch  # noqa: F401 - the config-path shortcut, before any config loads


def _set_crop(pipeline: list[dict], crop: int) -> None:
    """Scale the resize/crop steps to ``crop``, keeping the dataset's long/short scale ratio
    (ADE20K's 4, Cityscapes' 2, Pascal Context's 8)."""
    for step in pipeline:
        if step['type'] in ('RandomResize', 'Resize') and 'scale' in step:
            ratio = max(step['scale']) // min(step['scale'])
            step['scale'] = (ratio * crop, crop)
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


def _apply_full(cfg: Config, job: JobRequest) -> None:
    cfg.model.pretrained = str(Path(job.weights_root) / job.row.pretrained_file)


def _test_scale(cfg: Config) -> tuple[int, int]:
    """The (long, short) scale the test pipeline resizes an image to."""
    for step in cfg.test_dataloader.dataset.pipeline:
        if step['type'] == 'Resize' and 'scale' in step:
            return max(step['scale']), min(step['scale'])
    raise SpecError('the test pipeline has no Resize step with a scale')


def _set_tta(cfg: Config) -> None:
    """The official multi-scale evaluation as mmseg's test-time augmentation settings
    (``tta_pipeline``, ``tta_model``), so mmseg's own test tool with ``--tta`` evaluates it too:
    the test image at the single-scale test scale times each ratio, with and without flip,
    logits averaged. mmseg's stock ``tta_pipeline`` scales the original image instead of the
    test-sized one, so the pipeline is built here from the row's test scale."""
    long, short = _test_scale(cfg)
    resizes = [dict(type='Resize', scale=(int(long * r), int(short * r)), keep_ratio=True)
               for r in MULTI_SCALE_RATIOS]
    flips = [dict(type='RandomFlip', prob=0.0, direction='horizontal'),
             dict(type='RandomFlip', prob=1.0, direction='horizontal')]
    cfg.tta_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='TestTimeAug', transforms=[resizes, flips, [dict(type='LoadAnnotations')],
                                             [dict(type='PackSegInputs')]])]
    cfg.tta_model = dict(type='BatchedSegTTAModel')


def _use_multi_scale(cfg: Config) -> None:
    """Evaluate with the config's TTA settings, as mmseg's test tool does under ``--tta``."""
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline
    cfg.model = dict(cfg.tta_model, module=cfg.model)


# what an evaluation of our checkpoint takes from its training's frozen config
TRAINED_KEYS = ('model', 'test_dataloader', 'test_cfg', 'tta_model', 'tta_pipeline')


def _use_trained_recipe(cfg: Config, frozen: Path, job: JobRequest) -> None:
    """The model, test data and test-time settings of the training's frozen config ``frozen``
    in ``cfg``, keeping this machine's data root and loader workers; no pretrained weights (the
    checkpoint holds every weight)."""
    if not frozen.is_file():
        raise StateError(f'{frozen} is missing: the recipe {job.checkpoint} was trained with is '
                         'unknown, so it is not evaluated')
    trained = Config.fromfile(frozen)
    workers = {k: cfg.test_dataloader[k] for k in ('num_workers', 'persistent_workers')
               if k in cfg.test_dataloader}
    for key in TRAINED_KEYS:
        if key in trained:
            cfg[key] = trained[key]
    cfg.test_dataloader.update(workers)
    cfg.test_dataloader.dataset.data_root = str(job.data_root)
    cfg.model.pretrained = None


def _shorten(cfg: Config, max_iters: int) -> None:
    """End training, the poly decay and the checkpoints at ``max_iters``, keeping the profile's
    evaluation pattern (mmengine always validates at the last iteration)."""
    cfg.train_cfg.max_iters = max_iters
    cfg.train_cfg.val_interval = min(cfg.train_cfg.val_interval, max_iters)
    if 'dynamic_intervals' in cfg.train_cfg:
        cfg.train_cfg.dynamic_intervals = [(start, min(interval, max_iters + 1))
                                           for start, interval in cfg.train_cfg.dynamic_intervals]
    cfg.param_scheduler[0].update(end=max_iters)
    hook = cfg.default_hooks.checkpoint
    hook.interval = min(hook.interval, max_iters)


def checkpoint_artifact(profile: str, table: str, row: str, seed: int) -> str:
    """The W&B artifact name of a training job's finished checkpoint."""
    return f'checkpoint-{profile}-{table}-{row}-seed{seed}'


def _wandb_backend(job: JobRequest) -> dict:
    """The job's W&B run: named and tagged so training, evaluation of ours (single- or
    multi-scale) and of a released checkpoint read apart, grouped by row so its seeds and their
    evaluations sit together, with the files it reads declared as artifacts (lineage)."""
    row, scale = job.row, 'multi-scale' if job.multi_scale else 'single-scale'
    tags = [row.table, job.profile, row.id]
    uses = []
    if job.kind == 'train':
        name, kind = f'{row.id}-seed{job.seed}', 'train'
        tags.append('train')
        if job.profile == 'full':
            weights = Path(job.weights_root) / row.pretrained_file
            uses.append([f'pretrained-{weights.stem}', 'pretrained-weights', str(weights)])
    elif not job.released:
        name, kind = f'{row.id}-seed{job.seed}-eval-{scale}', 'eval'
        tags += ['eval', 'ours', scale]
        uses.append([checkpoint_artifact(job.profile, row.table, row.id, job.seed), 'model',
                     str(job.checkpoint)])
    else:
        name, kind = f'{row.id}-released-{scale}', 'eval'
        tags += ['eval', 'released', scale]
        uses.append([f'released-{row.table}-{row.id}', 'model', str(job.checkpoint)])
    return dict(
        type='IterationWandbVisBackend',
        init_kwargs=dict(
            project=job.wandb_project, group=f'{row.table}/{row.id}', name=name, tags=tags,
            job_type=kind, id=job.wandb_run_id, resume='allow', reinit='finish_previous'),
        uses=uses,
        checkpoint_artifact=(checkpoint_artifact(job.profile, row.table, row.id, job.seed)
                             if job.kind == 'train' else None),
        # the run's provenance (git, versions, hardware, dataset) is read from the state when
        # the run starts: kept out of the config, whose text goes into every checkpoint
        meta_file=None if job.work_dir is None else str(Path(job.work_dir) / STATE_FILE))


def does_not_build(row, err: BaseException) -> SpecError:
    """The one line for a row whose config or model does not build, whatever mmengine or mmseg
    raised: the row, its config file and the first line of the reason."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return SpecError(f'{row.table}/{row.id}: config {row.config} does not build: '
                     f'{type(err).__name__}: {(lines or [""])[0][:200]}')


def build_config(job: JobRequest) -> Config:
    """The resolved mmengine config of ``job``, ready for ``Runner.from_cfg``."""
    read = Config.fromfile(job.row.config_path)
    # written as mmengine lays it out, without yapf's pass over the whole text at each dump,
    # log and checkpoint (the slowest part of a job's start); mmengine 0.10.7's fromfile drops
    # its own format_python_code=False, so the config is made again with it
    cfg = Config(read.to_dict(), cfg_text=read.text, filename=read.filename,
                 env_variables=read.env_variables, format_python_code=False)
    # the recipe's total batch stays the same however many processes share it
    cfg.train_dataloader.batch_size = cfg.total_batch_size // job.gpus
    if job.profile == 'smoke':
        _apply_smoke(cfg, SMOKE)
    else:
        _apply_full(cfg, job)
    if job.max_iters is not None:
        _shorten(cfg, job.max_iters)
    if job.batch is not None:
        cfg.train_dataloader.batch_size = job.batch
    if job.workers is not None:
        _set_workers(cfg, job.workers)
    elif job.profile == 'full':  # what this process's allocation feeds (smoke: in-process)
        _set_workers(cfg, loader_workers(job.gpus)[0])
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = str(job.data_root)

    cfg.work_dir = str(job.work_dir)
    cfg.randomness = dict(seed=job.seed)
    cfg.resume = True  # mmengine resumes from the job's checkpoint pointer when there is one
    if job.checkpoint is not None:  # evaluation: the job loads the checkpoint itself, strictly
        cfg.model.pretrained = None
        cfg.resume = False
    _set_tta(cfg)
    if job.checkpoint is not None and not job.released:
        # our checkpoint is evaluated as the model it trained, with the recipe frozen at its
        # training's first start: the row's config in this checkout may have changed since
        _use_trained_recipe(cfg, Path(job.checkpoint).parent / FROZEN_CONFIG, job)
    if job.checkpoint is not None and job.multi_scale:
        _use_multi_scale(cfg)
    wandb = _wandb_backend(job)
    # save_dir = the job folder, not mmengine's per-start <timestamp>/ folder: a resumed job
    # appends to the same curves file and W&B run instead of starting new ones.
    # keeps per-class IoU and the W&B summary (final/best mIoU) of every validation
    cfg.val_evaluator = dict(type='PerClassIoUMetric', iou_metrics=['mIoU'])
    cfg.test_evaluator = cfg.val_evaluator
    # PreemptionHook: a stop signal ends training with a checkpoint; torch RNG in checkpoints
    # ProgressHook: a progress line and the job state's progress at the logger's interval
    cfg.custom_hooks = [dict(type='RunSummaryHook'), dict(type='PreemptionHook'),
                        dict(type='ProgressHook', interval=cfg.default_hooks.logger.interval)]
    _seed_data_by_position(cfg)
    if job.amp:
        _apply_amp(cfg, job.amp)
    # unnamed: mmengine names it after the Runner's experiment, one per Runner (under a fixed
    # name, a second job in the same process would get the first one's finished W&B run)
    cfg.visualizer = dict(type='SegLocalVisualizer', save_dir=str(job.work_dir),
                          vis_backends=[dict(type='LocalVisBackend'), wandb])
    return cfg


def _seed_data_by_position(cfg: Config) -> None:
    """Training data and its augmentations as a function of (seed, position in the run): the
    same whatever the loader workers or processes, and a resume skips to its iteration without
    loading the batches before it (``harness.runtime.sampling``). Wraps the train dataset:
    its config is ``cfg.train_dataloader.dataset.dataset`` from here on."""
    loader = cfg.train_dataloader
    loader.dataset = dict(type='PositionSeededDataset', dataset=loader.dataset)
    loader.sampler = dict(type='PositionSampler', shuffle=True)
    cfg.custom_hooks = [*cfg.get('custom_hooks', []), dict(type='DataResumeHook')]


def _set_workers(cfg: Config, workers: int) -> None:
    """``workers`` loader processes for every loader; they live as long as the job (a fresh set
    per evaluation would re-import the dataset's code each time)."""
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].update(num_workers=workers, persistent_workers=workers > 0)


def _apply_amp(cfg: Config, amp: str) -> None:
    """Train in ``amp`` precision (same optimiser, schedule); the modules named here live in
    ``harness.runtime.precision``."""
    if amp == 'bf16':
        cfg.optim_wrapper.type = 'BF16AutocastOptimWrapper'
    elif amp == 'fp16':
        cfg.optim_wrapper.update(type='AmpOptimWrapper', dtype='float16', loss_scale='dynamic')
    else:
        cfg.custom_hooks = [*cfg.get('custom_hooks', []), dict(type='TF32TrainingHook')]
