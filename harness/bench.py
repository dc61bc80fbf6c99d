"""Speed benchmark: the project's row models against stock mmseg 1.2.2, side by side.

For each case (a row, an input size) the same weights go into two models: ours (the row's
config: fused-attention blocks, batched sliding windows) and stock (the same config with
mmseg's own ``VisionTransformer`` / ``SegmenterMaskTransformerHead`` / ``EncoderDecoder``).
Measured: training step time and peak memory (each variant in fresh processes, so the peaks do
not mix, stock and ours alternating over several rounds), single- and multi-scale
sliding-window evaluation time with the logits compared, and the harness's overhead over a
bare mmengine Runner on the same smoke config. Figures are
min/median/max over repeats; ``reports/bench/bench.{md,json}`` hold them with the machine.

``python -m harness bench [--device cuda] [--amp bf16] [--compile]`` (``make bench``).
"""
from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .core.layout import CONFIG_FILE, CURVES_FILE, REPO_ROOT, job_dir
from .core.spec import load_table

# ours -> stock mmseg type of each module the project replaces
STOCK_TYPES = {'SegmenterViT': 'VisionTransformer',
               'OfficialInitSegmenterMaskHead': 'SegmenterMaskTransformerHead',
               'BatchedSlideEncoderDecoder': 'EncoderDecoder',
               'ChannelsLastCrossEntropyLoss': 'CrossEntropyLoss'}
AMP_DTYPES = {'bf16': 'bfloat16', 'fp16': 'float16'}


@dataclasses.dataclass(frozen=True)
class Case:
    table: str
    row: str
    crop: int  # training crop = sliding window
    batch: int  # training images per step
    image: tuple[int, int]  # evaluation image (ADE20K-like: short side = crop)
    images: int  # evaluation images

    @property
    def name(self) -> str:
        return f'{self.row}@{self.crop}'


# CPU: the sizes the issue measured (ViT-S mask, 2 x 512 x 512); GPU: the paper's Seg-B rows
CPU_CASES = (Case('table6', 'seg-s-mask-16', 512, 2, (512, 683), 2),)
GPU_CASES = (Case('table3', 'seg-b-16', 512, 8, (512, 683), 16),
             Case('table6', 'seg-bd-mask-16', 512, 8, (512, 683), 16))


def model_cfg(table: str, row: str, crop: int, stock: bool = False):
    """The row's model config at ``crop`` (random init); ``stock`` swaps in mmseg's modules."""
    from mmengine.config import Config
    cfg = Config.fromfile(load_table(table).row(row).config_path, import_custom_modules=False)
    model = cfg.model
    model.pretrained = None
    # the row's stride, scaled with the crop (480 at 512): windows still overlap
    stride = model.test_cfg.stride[0] * crop // cfg.crop_size[0]
    model.backbone.update(img_size=(crop, crop), init_cfg=None)
    model.data_preprocessor.size = (crop, crop)
    model.test_cfg.update(crop_size=(crop, crop), stride=(stride, stride))
    if stock:
        for part in (model, model.backbone, model.decode_head, model.decode_head.loss_decode):
            part.type = STOCK_TYPES.get(part.type, part.type)
        if model.backbone.type == 'DistilledVisionTransformer':  # no stock counterpart
            model.backbone.fused_attention = False
        model.test_cfg.pop('slide_batch', None)
    return model


def build_pair(case: Case, device: str, stock: bool, seed: int = 0):
    """Ours, built and initialised from ``seed``; with ``stock``, mmseg's model holding the
    very same weights."""
    import torch
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    import harness.models  # noqa: F401 - registers the project's modules
    register_all_modules(init_default_scope=True)
    torch.manual_seed(seed)
    ours = MODELS.build(model_cfg(case.table, case.row, case.crop))
    ours.init_weights()
    if not stock:
        return ours.to(device)
    baseline = MODELS.build(model_cfg(case.table, case.row, case.crop, stock=True))
    baseline.load_state_dict(ours.state_dict(), strict=True)
    return baseline.to(device)


def train_batch(case: Case, device: str, seed: int = 1):
    """A fixed batch: normalised images, labels in 0..149 with some ignored (255) pixels."""
    import torch
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    gen = torch.Generator().manual_seed(seed)
    inputs = torch.randn(case.batch, 3, case.crop, case.crop, generator=gen).to(device)
    samples = []
    for _ in range(case.batch):
        label = torch.randint(0, 150, (1, case.crop, case.crop), generator=gen)
        label[:, : case.crop // 8] = 255
        sample = SegDataSample(gt_sem_seg=PixelData(data=label.to(device)))
        sample.set_metainfo(dict(img_shape=(case.crop, case.crop),
                                 pad_shape=(case.crop, case.crop)))
        samples.append(sample)
    return inputs, samples


def _total_loss(model, inputs, samples):
    """The training loss, summed the way mmengine's train step sums it."""
    return model.parse_losses(model.loss(inputs, samples))[0]


def _autocast(device: str, amp: str | None):
    """Mixed-precision context for ``amp`` (bf16/fp16), or a no-op one."""
    import torch
    if not amp:
        return torch.autocast(device_type='cpu', enabled=False)
    return torch.autocast(device_type=device.split(':')[0], dtype=getattr(torch, AMP_DTYPES[amp]))


def select_cases(device: str, rows: list[str] | None) -> tuple[Case, ...]:
    """The device's cases, or one case per named row (the one sized for this device)."""
    default = GPU_CASES if device.startswith('cuda') else CPU_CASES
    if not rows:
        return default
    by_row = {c.row: c for c in CPU_CASES + GPU_CASES if c not in default}
    by_row.update({c.row: c for c in default})
    unknown = sorted(set(rows) - set(by_row))
    if unknown:
        raise ValueError(f"no bench case for {', '.join(unknown)} (cases: "
                         f"{', '.join(sorted(by_row))})")
    return tuple(by_row[r] for r in rows)


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        import torch
        torch.cuda.synchronize()


def _spread(values: list[float]) -> dict:
    return {'min': min(values), 'median': statistics.median(values), 'max': max(values),
            'n': len(values)}


def measure_train(case: Case, device: str, stock: bool, repeats: int, warmup: int,
                  amp: str | None, compile_model: bool) -> dict:
    """Training-step seconds, peak memory and the loss of a fixed batch (in this process)."""
    import torch
    if amp == 'tf32':  # fp32 tensors, TF32 tensor-core matmuls (an option, not the paper's)
        torch.backends.cuda.matmul.allow_tf32 = True
        amp = None
    model = build_pair(case, device, stock)
    inputs, samples = train_batch(case, device)
    model.eval()
    with torch.no_grad():  # the same function on both sides: equal loss before any step
        loss0 = _total_loss(model, inputs, samples).item()
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
    scaler = torch.amp.GradScaler(device.split(':')[0], enabled=amp == 'fp16')
    if compile_model and not stock:
        # in place: torch.compile(model) would compile forward() only, and the step calls loss()
        model.backbone.compile()
        model.decode_head.compile()
    times, faults, kernel = [], [], []
    if device.startswith('cuda'):
        torch.cuda.reset_peak_memory_stats()
    for i in range(warmup + repeats):
        _sync(device)
        before = resource.getrusage(resource.RUSAGE_SELF)
        start = time.perf_counter()
        with _autocast(device, amp):  # a fresh context each step
            loss = _total_loss(model, inputs, samples)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_SELF)
            # fresh memory is zeroed by the kernel, page by page, on first touch: on CPUs this
            # time moves with the machine's memory traffic, and makes a step's time swing
            faults.append(after.ru_minflt - before.ru_minflt)
            kernel.append(after.ru_stime - before.ru_stime)
    peak = (torch.cuda.max_memory_allocated() if device.startswith('cuda')
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {'seconds': _spread(times), 'times': times, 'page_faults': faults,
            'kernel_seconds': kernel,
            'images_per_s': case.batch / statistics.median(times),
            'peak_memory_mb': peak / 2**20, 'memory_kind': 'cuda max allocated'
            if device.startswith('cuda') else 'process max RSS', 'loss_eval_mode': loss0}


def _views(image, multi_scale: bool) -> list:
    """The image, or its multi-scale + flip views (the official ratios, as the TTA pipeline)."""
    import torch.nn.functional as F

    from .core.profiles import MULTI_SCALE_RATIOS
    if not multi_scale:
        return [image]
    height, width = image.shape[-2:]
    views = []
    for ratio in MULTI_SCALE_RATIOS:
        scaled = F.interpolate(image, size=(int(height * ratio), int(width * ratio)),
                               mode='bilinear', align_corners=False)
        views += [scaled, scaled.flip(-1)]
    return views


def _merged(logits: list, size) -> 'torch.Tensor':
    """Softmax average of the views at the image size (flipped views flipped back); one view:
    its logits, whose argmax is mmseg's single-scale prediction."""
    import torch.nn.functional as F
    if len(logits) == 1:
        return logits[0]
    probs = [F.interpolate(lg, size=size, mode='bilinear', align_corners=False).softmax(1)
             for lg in logits]
    probs = [p.flip(-1) if k % 2 else p for k, p in enumerate(probs)]
    return sum(probs) / len(probs)


def measure_eval(case: Case, device: str, repeats: int, slide_batch: int,
                 multi_scale: bool = False) -> dict:
    """Sliding-window evaluation of ``case.images`` images (single-scale, or multi-scale + flip),
    ours (windows of all views batched) and stock (mmseg's loop, view by view) alternating;
    the per-view logits and the merged predictions of the two compared."""
    import torch
    ours = build_pair(case, device, stock=False).eval()
    stock = build_pair(case, device, stock=True).eval()
    ours.test_cfg.slide_batch = slide_batch
    gen = torch.Generator().manual_seed(2)
    images = [torch.randn(1, 3, *case.image, generator=gen).to(device)
              for _ in range(case.images)]
    run = {'stock': lambda views: [stock.slide_inference(v, [dict(img_shape=v.shape[-2:])])
                                   for v in views],
           'ours': ours.slide_views}
    timings = {'ours': [], 'stock': []}
    max_diff, agree, pixels, windows, reference = 0.0, 0, 0, 0, {}
    with torch.no_grad():
        for rep in range(repeats + 1):  # the first pass warms up and compares
            for name in ('stock', 'ours'):
                _sync(device)
                start = time.perf_counter()
                merged = []
                for n, image in enumerate(images):
                    views = _views(image, multi_scale)
                    logits = run[name](views)
                    merged.append(_merged(logits, case.image).argmax(1))
                    if not rep and name == 'stock':
                        reference[n] = [lg.cpu() for lg in logits]
                    elif not rep:
                        max_diff = max(max_diff, max((a.cpu() - b).abs().max().item()
                                                     for a, b in zip(logits, reference[n])))
                _sync(device)
                if rep:
                    timings[name].append(time.perf_counter() - start)
                elif name == 'stock':
                    ref_pred = merged
                else:
                    agree = sum(int((a == b).sum()) for a, b in zip(merged, ref_pred))
                    pixels = sum(a.numel() for a in merged)
    from .models.segmentor import window_boxes
    for view in _views(images[0], multi_scale):
        windows += len(window_boxes(*view.shape[-2:], ours.test_cfg.crop_size,
                                    ours.test_cfg.stride))
    return {name: {'seconds': _spread(t), 'images_per_s': case.images / statistics.median(t)}
            for name, t in timings.items()} | {
        'multi_scale': multi_scale, 'windows_per_image': windows, 'slide_batch': slide_batch,
        'max_abs_logit_diff': max_diff, 'argmax_agreement': agree / pixels,
        'argmax_equal': agree == pixels}


def profile_train(case: Case, device: str, amp: str | None, top: int = 12) -> str:
    """The most expensive operators of one training step of ours (a table, for the notes)."""
    from torch.profiler import ProfilerActivity, profile
    model = build_pair(case, device, stock=False).train()
    inputs, samples = train_batch(case, device)
    def step():
        with _autocast(device, amp):
            loss = _total_loss(model, inputs, samples)
        loss.backward()
        model.zero_grad(set_to_none=True)
        _sync(device)

    step()  # warm-up
    cuda = device.startswith('cuda')
    with profile(activities=[ProfilerActivity.CPU]
                 + ([ProfilerActivity.CUDA] if cuda else [])) as prof:
        step()
    key = 'self_cuda_time_total' if cuda else 'self_cpu_time_total'
    return prof.key_averages().table(sort_by=key, row_limit=top, max_name_column_width=60)


def compute_floor(case: Case, device: str, repeats: int = 20) -> dict:
    """The matmul work of one fp32 training step of ours and the time it takes at this
    machine's own fp32 GEMM rate: a lower bound on any implementation's step, hence an upper
    bound on the ratio stock/ours that faster code can reach.

    FLOPs are counted by ``FlopCounterMode`` with attention on PyTorch's math backend (so its
    matmuls are counted: 2 forward, 4 backward; the fused kernel recomputes one more). The rate
    is the best of ``repeats`` runs of one encoder MLP matmul of the case (all tokens of the
    batch x width -> 4 x width)."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode
    model = build_pair(case, device, stock=False).train()
    inputs, samples = train_batch(case, device)
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):
        _total_loss(model, inputs, samples).backward()
    flop = counter.get_total_flops()
    tokens = case.batch * (case.crop // model.backbone.patch_size) ** 2
    width = model.backbone.layers[0].attn.embed_dims
    a = torch.randn(tokens, width, device=device)
    w = torch.randn(4 * width, width, device=device)
    best = float('inf')
    for i in range(repeats + 3):
        _sync(device)
        start = time.perf_counter()
        a @ w.T
        _sync(device)
        if i >= 3:
            best = min(best, time.perf_counter() - start)
    rate = 2 * tokens * width * 4 * width / best
    return {'step_gflop': flop / 1e9, 'gemm_gflop_per_s': rate / 1e9,
            'floor_seconds': flop / rate, 'gemm_shape': [tokens, width, 4 * width]}


def train_rounds(case: Case, device: str, variants: dict, rounds: int, per_round: int,
                 warmup: int, compile_model: bool) -> dict:
    """Training-step figures of each variant (name -> (stock, precision)): ``per_round``
    steps measured in each of ``rounds`` rounds of one fresh process per variant, the order reversed every other round: a slow spell of the machine then falls on
    both sides instead of on whichever ran during it. Each variant's steps of all rounds are
    pooled; its per-round medians are kept so the ratio of each round can be read too."""
    runs = {name: [] for name in variants}
    for round_ in range(rounds):
        order = list(variants) if round_ % 2 == 0 else list(reversed(variants))
        for name in order:
            stock, precision = variants[name]
            runs[name].append(_in_child(measure_train, case, device, stock, per_round,
                                        warmup, precision, compile_model and not stock))
    merged = {}
    for name, results in runs.items():
        times = [t for r in results for t in r['times']]
        losses = [r['loss_eval_mode'] for r in results]
        # same weights, same batch: every process computes the same loss (up to the kernels a
        # GPU library picks); anything more is a different model, which the bench must not time
        if max(losses) - min(losses) > 1e-4 * abs(losses[0]):
            raise RuntimeError(f'{name}: eval-mode loss differs between rounds: {losses}')
        merged[name] = {**results[0], 'seconds': _spread(times), 'times': times,
                        **{key: [v for r in results for v in r[key]]
                           for key in ('page_faults', 'kernel_seconds')},
                        'images_per_s': case.batch / statistics.median(times),
                        'peak_memory_mb': max(r['peak_memory_mb'] for r in results),
                        'round_medians': [r['seconds']['median'] for r in results]}
    return merged


def _in_child(func, *args):
    """Run ``func(*args)`` in a fresh spawned process: its own peak memory, its own threads."""
    with mp.get_context('spawn').Pool(1) as pool:
        return pool.apply(func, args)


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


def _run_stock_runner(job_config: str, work_dir: str) -> None:
    """A bare mmengine Runner on ``stock_runner_config`` (the bench's baseline process)."""
    from mmengine.runner import Runner
    Runner.from_cfg(stock_runner_config(Path(job_config), Path(work_dir))).train()


def hook_seconds(job_config: Path, work_dir: Path, stock: bool) -> dict:
    """Train the job's config in this process (``stock``: without the harness's parts) with a
    stopwatch on every hook call and every W&B backend call: seconds per hook class, and the
    whole ``train()``. The harness's per-iteration work is measured directly, free of the
    model's run-to-run noise."""
    import collections
    import functools

    from mmengine.config import Config
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    from .runtime.safe_resume import enable_safe_resume
    from .runtime.wandb_backend import IterationWandbVisBackend
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
    return {'train_seconds': total, 'iterations': cfg.train_cfg.max_iters,
            'hooks': dict(sorted(spent.items(), key=lambda kv: -kv[1]))}


def harness_overhead(repeats: int, work: Path) -> dict:
    """One smoke job through ``python -m harness run`` against the same model, data and
    schedule on a bare mmengine Runner without the harness's hooks and W&B logging (both fresh
    processes, alternating). Whole process and logged training-iteration times; the fixed cost
    per job is what the whole-process difference leaves after the per-iteration difference."""
    from .assets.synthetic import ensure_dataset
    data = ensure_dataset(work / 'data' / 'ADEChallengeData2016')
    env = {**os.environ, 'PYTHONPATH': str(REPO_ROOT), 'WANDB_MODE': 'offline',
           'WANDB_SILENT': 'true', 'CUDA_VISIBLE_DEVICES': ''}
    bare = 'import sys; from harness.bench import _run_stock_runner as r; r(*sys.argv[1:])'
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
            iter_s[name] += _iteration_seconds(folder / CURVES_FILE)
    from mmengine.config import Config
    iterations = Config.fromfile(str(job / CONFIG_FILE)).train_cfg.max_iters
    hooks = {name: _in_child(hook_seconds, job / CONFIG_FILE, work / f'hooks-{name}',
                             name == 'bare') for name in ('harness', 'bare')}
    whole = {k: statistics.median(v) for k, v in times.items()}
    per_iter = {k: statistics.median(v) for k, v in iter_s.items()}
    return {name: _spread(t) for name, t in times.items()} | {
        'ratio': whole['harness'] / whole['bare'],
        'iteration_seconds': {k: _spread(v) for k, v in iter_s.items()},
        'iteration_ratio': per_iter['harness'] / per_iter['bare'],
        'iteration_ratio_min': min(iter_s['harness']) / min(iter_s['bare']),
        'iterations': iterations, 'hook_seconds': hooks,
        # the harness's own work in the loop, measured: hook + W&B time beyond the bare run's
        'hooks_share': (sum(hooks['harness']['hooks'].values())
                        - sum(hooks['bare']['hooks'].values())) / hooks['bare']['train_seconds'],
        'hooks_share_without_checkpoints': (
            _loop_seconds(hooks['harness']) - _loop_seconds(hooks['bare']))
        / hooks['bare']['train_seconds'],
        'fixed_seconds': (whole['harness'] - whole['bare']
                          - iterations * (per_iter['harness'] - per_iter['bare']))}


def _loop_seconds(timed: dict) -> float:
    """Hook and W&B seconds of a ``hook_seconds`` run, checkpoint saving left out."""
    return sum(sec for name, sec in timed['hooks'].items() if 'CheckpointHook' not in name)


def _iteration_seconds(scalars: Path) -> list[float]:
    """mmengine's logged training-iteration times (``time``, averaged per log interval)."""
    rows = [json.loads(line) for line in scalars.read_text().splitlines() if line.strip()]
    return [row['time'] for row in rows if 'time' in row and 'loss' in row]


def machine(device: str) -> dict:
    import torch
    info = {'python': platform.python_version(), 'torch': torch.__version__,
            'cpu': platform.processor() or platform.machine(), 'cpu_count': os.cpu_count(),
            'threads': torch.get_num_threads()}
    for pkg in ('mmcv', 'mmengine', 'mmseg'):
        info[pkg] = __import__(pkg).__version__
    if device.startswith('cuda'):
        info['gpu'] = torch.cuda.get_device_name(0)
    return info


def run_bench(device: str = 'cpu', repeats: int = 5, warmup: int = 2, amp: str | None = None,
              compile_model: bool = False, slide_batch: int = 8, overhead: bool = True,
              out: Path = REPO_ROOT / 'reports' / 'bench', cases: tuple[Case, ...] = (),
              tf32: bool = False, profile: bool = False, rounds: int = 3) -> dict:
    cases = cases or (GPU_CASES if device.startswith('cuda') else CPU_CASES)
    result = {'command': ' '.join(['python -m harness'] + sys.argv[1:]),
              'date': time.strftime('%Y-%m-%d'), 'device': device, 'machine': machine(device),
              'amp': amp, 'tf32': tf32,
              'compile': compile_model, 'repeats': repeats, 'warmup': warmup,
              'rounds': rounds, 'cases': [],
              # --repeats training steps a side in all, whole rounds
              'steps_per_round': -(-repeats // rounds)}
    for case in cases:
        print(f'{case.name}: training step, stock and ours alternating, {rounds} rounds ...',
              flush=True)
        entry = {'case': dataclasses.asdict(case)}
        variants = {'train_stock': (True, None), 'train_ours': (False, None)}
        if amp:
            variants['train_ours_amp'] = (False, amp)
        if tf32:
            variants['train_ours_tf32'] = (False, 'tf32')
        entry.update(train_rounds(case, device, variants, rounds, result['steps_per_round'],
                                  warmup, compile_model))
        print(f'{case.name}: sliding-window evaluation, single- and multi-scale ...', flush=True)
        entry['eval'] = _in_child(measure_eval, case, device, repeats, slide_batch, False)
        # 12 views an image: a quarter of the images, fewer repeats
        ms_case = dataclasses.replace(case, images=max(1, case.images // 4))
        entry['eval_ms'] = _in_child(measure_eval, ms_case, device, max(2, repeats // 3),
                                     slide_batch, True)
        stock_s = entry['train_stock']['seconds']['median']
        entry['ratios'] = {
            'train_step': stock_s / entry['train_ours']['seconds']['median'],
            'train_step_by_round': [s / o for s, o in zip(entry['train_stock']['round_medians'],
                                                          entry['train_ours']['round_medians'])],
            'eval': (entry['eval']['stock']['seconds']['median']
                     / entry['eval']['ours']['seconds']['median']),
            'eval_multi_scale': (entry['eval_ms']['stock']['seconds']['median']
                                 / entry['eval_ms']['ours']['seconds']['median'])}
        for variant in ([amp] if amp else []) + (['tf32'] if tf32 else []):
            entry['ratios'][f'train_step_{variant}'] = stock_s / entry[
                'train_ours_amp' if variant == amp else 'train_ours_tf32']['seconds']['median']
        entry['floor'] = _in_child(compute_floor, case, device)
        entry['ratios']['train_step_ceiling'] = stock_s / entry['floor']['floor_seconds']
        if profile:
            entry['profile_ours'] = _in_child(profile_train, case, device, amp)
        result['cases'].append(entry)
        write_bench(result, Path(out))  # each finished case is on disk, should a later one fail
    if overhead:
        print('harness overhead: smoke job via the harness vs a bare Runner ...', flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            result['harness_overhead'] = harness_overhead(max(3, repeats // 2), Path(tmp))
        if result['cases']:  # the fixed cost against a full job as long as this run's step
            from .core.profiles import FULL_MAX_ITERS
            first = result['cases'][0]
            step = first['train_ours']['seconds']['median']
            result['harness_overhead']['full_job'] = {
                'row': first['case']['row'], 'step_seconds': step, 'iterations': FULL_MAX_ITERS,
                'fixed_share': result['harness_overhead']['fixed_seconds']
                / (FULL_MAX_ITERS * step)}
    write_bench(result, Path(out))
    return result


def _fmt(spread: dict, unit: str = 's') -> str:
    return f"{spread['median']:.3f} {unit} ({spread['min']:.3f}-{spread['max']:.3f})"


def write_bench(result: dict, out: Path) -> None:
    """Merge ``result`` into ``bench.json`` (one entry per device kind: cpu, gpu) and rewrite
    ``bench.md`` from all entries, so a GPU run and a CPU run sit side by side."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / 'bench.json'
    results = json.loads(path.read_text()) if path.is_file() else {}
    results['gpu' if result['device'].startswith('cuda') else 'cpu'] = result
    tmp = path.with_name('.bench.json.partial')
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, path)
    sections = [_section(results[kind]) for kind in ('gpu', 'cpu') if kind in results]
    (out / 'bench.md').write_text('# Benchmark: our row models vs stock mmseg 1.2.2\n\n'
                                  + '\n'.join(sections))


def _by_round(ratios: dict) -> str:
    """The ratio of each round's medians, when there was more than one round."""
    each = ratios.get('train_step_by_round', [])
    return f" (rounds: {', '.join(f'{r:.2f}' for r in each)})" if len(each) > 1 else ''


def _section(result: dict) -> str:
    m = result['machine']
    rounds = result.get('rounds')
    lines = [f"## {m.get('gpu', m['cpu'])} ({result['device']})", '',
             f"`{result.get('command', 'python -m harness bench')}`, {result.get('date', '')}."
             + (f" {result['note']}" if result.get('note') else ''), '',
             f"torch {m['torch']}, mmcv {m['mmcv']}, mmengine {m['mmengine']}, mmseg "
             f"{m['mmseg']}, Python {m['python']}, {m['cpu_count']} CPUs ({m['threads']} "
             f"threads). "
             + (f"Training: median (min-max) of {rounds} rounds × "
                f"{result['steps_per_round']} steps, each round one fresh process per "
                f"variant ({result['warmup']} warm-up steps first), the order reversed every "
                f"other round; evaluation: of {result['repeats']} repeats. "
                if 'rounds' in result else  # a run from before the rounds: one process a side
                f"Median (min-max) of {result['repeats']} repeats after {result['warmup']} "
                "warm-up steps. ")
             + f"AMP: {result['amp'] or 'off (fp32)'}; "
             f"torch.compile: {'on' if result['compile'] else 'off'}. Same weights on both "
             'sides; loss = eval-mode loss of one fixed batch before training.', '',
             '| case | stock step | ours step | ratio | stock mem | ours mem | loss stock / ours |',
             '| --- | --- | --- | --- | --- | --- | --- |']
    for c in result['cases']:
        s, o = c['train_stock'], c['train_ours']
        lines.append(f"| {c['case']['row']} {c['case']['batch']}×{c['case']['crop']}² | "
                     f"{_fmt(s['seconds'])} | {_fmt(o['seconds'])} | "
                     f"**{c['ratios']['train_step']:.2f}×**{_by_round(c['ratios'])} | "
                     f"{s['peak_memory_mb']:.0f} MB | "
                     f"{o['peak_memory_mb']:.0f} MB | {s['loss_eval_mode']:.5f} / "
                     f"{o['loss_eval_mode']:.5f} |")
        for key, label, ratio in (('train_ours_amp', f"{result['amp']} autocast",
                                   f"train_step_{result['amp']}"),
                                  ('train_ours_tf32', 'fp32 with TF32 matmuls', 'train_step_tf32')):
            if key in c:
                a = c[key]
                lines.append(f"| ↳ ours, {label} | | {_fmt(a['seconds'])} | "
                             f"**{c['ratios'][ratio]:.2f}×** | | {a['peak_memory_mb']:.0f} MB | "
                             + (f"{a['loss_eval_mode']:.5f} |" if key == 'train_ours_tf32'
                                else '(fp32 loss as above) |'))
    for c in result['cases']:
        if 'page_faults' in c['train_stock']:
            s, o = c['train_stock'], c['train_ours']
            lines += ['', f"Kernel time per training step of {c['case']['row']} (median; mostly "
                      'zeroing fresh pages on first touch, which moves with the machine\'s '
                      f"memory traffic): stock {statistics.median(s['kernel_seconds']):.2f} s "
                      f"({statistics.median(s['page_faults']) / 1e3:.0f} k page faults), ours "
                      f"{statistics.median(o['kernel_seconds']):.2f} s "
                      f"({statistics.median(o['page_faults']) / 1e3:.0f} k)."]
    for c in result['cases']:
        if 'floor' in c:
            f = c['floor']
            lines += ['', f"Compute floor of {c['case']['row']} (fp32 training step): "
                      f"{f['step_gflop']:.0f} GFLOP of matmuls at {f['gemm_gflop_per_s']:.0f} "
                      f"GFLOP/s (this machine's best fp32 GEMM rate, {f['gemm_shape'][0]}×"
                      f"{f['gemm_shape'][1]}×{f['gemm_shape'][2]}) = {f['floor_seconds']:.3f} s."
                      f" Even with everything else free, fp32 code here cannot beat stock by "
                      f"more than **{c['ratios']['train_step_ceiling']:.2f}×**."]
    lines += ['', '| eval case | windows/image | stock | ours (windows/forward) | ratio | '
              'max logit diff | argmax agreement |', '| --- | --- | --- | --- | --- | --- | --- |']
    for c in result['cases']:
        for key, ratio in (('eval', 'eval'), ('eval_ms', 'eval_multi_scale')):
            if key not in c:
                continue
            e = c[key]
            scales = 'multi-scale + flip (12 views)' if e.get('multi_scale') else 'single-scale'
            lines.append(f"| {c['case']['row']} {c['case']['images']} × {c['case']['image'][0]}"
                         f"×{c['case']['image'][1]}, {scales} | {e['windows_per_image']} | "
                         f"{_fmt(e['stock']['seconds'])} | {_fmt(e['ours']['seconds'])} "
                         f"({e['slide_batch']}) | **{c['ratios'][ratio]:.2f}×** | "
                         f"{e['max_abs_logit_diff']:.2e} | "
                         + (f"{100 * e['argmax_agreement']:.4f}% |" if 'argmax_agreement' in e
                            else f"{'all equal' if e['argmax_equal'] else 'not all equal'} |"))
    if 'harness_overhead' in result:
        h = result['harness_overhead']
        i = h['iteration_seconds']
        baseline = ('a bare mmengine Runner on the same model, data and schedule without the '
                    "harness's hooks and W&B logging" if 'fixed_seconds' in h else
                    'its dumped config on a bare mmengine Runner')
        lines += ['', f"Harness overhead, one smoke job through `harness run` vs {baseline}:", '',
                  f"- whole process: {_fmt(h['harness'])} vs {_fmt(h['bare'])} = "
                  f"**{100 * (h['ratio'] - 1):+.1f}%**",
                  f"- per training iteration (logged, median of all intervals): "
                  f"{_fmt(i['harness'])} vs {_fmt(i['bare'])} = "
                  f"**{100 * (h['iteration_ratio'] - 1):+.1f}%**"
                  + (f"; fastest interval {100 * (h['iteration_ratio_min'] - 1):+.1f}%"
                     if 'iteration_ratio_min' in h else '')]
        if 'hooks_share' in h:
            ours, bare = h['hook_seconds']['harness'], h['hook_seconds']['bare']
            top = ', '.join(f'{name} {sec:.3f} s' for name, sec in list(ours['hooks'].items())[:4])
            lines.append(f"- inside the training loop (a stopwatch on every hook and W&B call, "
                         f"{ours['iterations']} iterations, 2 validations, 5 checkpoints): "
                         f"{sum(ours['hooks'].values()):.3f} s with the harness vs "
                         f"{sum(bare['hooks'].values()):.3f} s bare, in a {bare['train_seconds']:.1f}"
                         f" s `train()` = **{100 * h['hooks_share']:+.1f}%**, of which "
                         f"{100 * h['hooks_share_without_checkpoints']:+.1f}% outside checkpoint"
                         f" saving, which the smoke profile does every 20 iterations (the full "
                         f"recipe: every 8000) (largest: {top})")
        if 'fixed_seconds' in h:
            lines.append(f"- fixed cost per job: {h['fixed_seconds']:.1f} s (the whole-process "
                         f"difference less {h['iterations']} × the per-iteration one: the CLI "
                         'process, the pre-launch config check, the W&B run, fingerprints). On '
                         'a full 160k-iteration job it is paid once.')
        if 'full_job' in h:
            from .core.profiles import TOTAL_BATCH
            f = h['full_job']
            lines.append(f"- the fixed cost against a full job: at most "
                         f"**{100 * f['fixed_share']:.4f}%** ({f['iterations']} iterations of "
                         f"this run's {f['step_seconds']:.3f} s training step of ours, "
                         f"{f['row']}; the full recipe's batch of "
                         f"{TOTAL_BATCH} makes a real job longer)")
    for c in result['cases']:
        if c.get('profile_ours'):
            lines += ['', f"Top operators of one training step of ours ({c['case']['row']}, "
                      f"{result['amp'] or 'fp32'}):", '', '```', c['profile_ours'].strip(), '```']
    memory = result['cases'][0]['train_stock']['memory_kind'] if result['cases'] else ''
    lines += ['', f'Memory: {memory}' + (' (includes the interpreter and libraries: compare '
                                         'the columns, not the absolute figures).'
                                         if 'RSS' in memory else '.'), '']
    return '\n'.join(lines)


def print_ratios(result: dict) -> None:
    for c in result['cases']:
        for name, ratio in c['ratios'].items():
            if name == 'train_step_by_round':
                continue
            what = ('fp32 ceiling (stock / compute floor)' if name == 'train_step_ceiling'
                    else f'{name} ours/stock speed')
            print(f"{c['case']['row']}: {what} {ratio:.2f}x"
                  + (_by_round(c['ratios']) if name == 'train_step' else ''))
    if 'harness_overhead' in result:
        h = result['harness_overhead']
        print(f"harness overhead {100 * (h['ratio'] - 1):+.1f}% a smoke job, "
              f"{100 * (h['iteration_ratio'] - 1):+.1f}% per training iteration, "
              f"{h.get('fixed_seconds', float('nan')):.1f} s fixed per job, "
              f"{100 * h.get('hooks_share', float('nan')):+.1f}% measured inside the loop")
