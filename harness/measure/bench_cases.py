"""The bench's measurements of one case, each run in a fresh process by
:mod:`harness.measure.bench`: the two models of a case (ours and stock mmseg holding the same
weights), a training step of each, sliding-window evaluation of both, the compute floor of a
step and an operator profile.
"""
from __future__ import annotations

import multiprocessing as mp
import resource
import statistics
import time
from typing import TYPE_CHECKING

from ..core.errors import SpecError
from ..core.spec import load_table
from .bench_result import Case, EvalSide, Evaluation, Floor, Spread, Training

if TYPE_CHECKING:  # torch loads in the measuring processes only
    import torch

# ours -> stock mmseg type of each module the project replaces
STOCK_TYPES = {'SegmenterViT': 'VisionTransformer',
               'OfficialInitSegmenterMaskHead': 'SegmenterMaskTransformerHead',
               'BatchedSlideEncoderDecoder': 'EncoderDecoder',
               'ChannelsLastCrossEntropyLoss': 'CrossEntropyLoss'}
AMP_DTYPES = {'bf16': 'bfloat16', 'fp16': 'float16'}


# CPU: the sizes the issue measured (ViT-S mask, 2 x 512 x 512); GPU: the paper's Seg-B rows
CPU_CASES = (Case('table6', 'seg-s-mask-16', 512, 2, (512, 683), 2),)
GPU_CASES = (Case('table3', 'seg-b-16', 512, 8, (512, 683), 16),
             Case('table6', 'seg-bd-mask-16', 512, 8, (512, 683), 16))
# a check that the bench runs end to end in seconds (the GPU script's dry run): its ratios
# measure a toy, not a row at its size
TINY_CASES = (Case('table6', 'seg-t-mask-16', 64, 2, (64, 150), 4),)


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
    by_row = {c.row: c for c in TINY_CASES + CPU_CASES + GPU_CASES + default}
    unknown = sorted(set(rows) - set(by_row))
    if unknown:
        raise SpecError(f"no bench case for {', '.join(unknown)} (cases: "
                        f"{', '.join(sorted(by_row))})")
    return tuple(by_row[r] for r in rows)


def in_child(func, *args):
    """Run ``func(*args)`` in a fresh spawned process: its own peak memory, its own threads."""
    with mp.get_context('spawn').Pool(1) as pool:
        return pool.apply(func, args)


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        import torch
        torch.cuda.synchronize()


def measure_train(case: Case, device: str, stock: bool, repeats: int, warmup: int,
                  amp: str | None, compile_model: bool) -> Training:
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
    return Training(seconds=Spread.of(times), times=times, page_faults=faults,
                    kernel_seconds=kernel, images_per_s=case.batch / statistics.median(times),
                    peak_memory_mb=peak / 2**20, loss_eval_mode=loss0,
                    memory_kind='cuda max allocated' if device.startswith('cuda')
                    else 'process max RSS')


def _views(image, multi_scale: bool) -> list:
    """The image, or its multi-scale + flip views (the official ratios, as the TTA pipeline)."""
    import torch.nn.functional as F

    from ..core.profiles import MULTI_SCALE_RATIOS
    if not multi_scale:
        return [image]
    height, width = image.shape[-2:]
    views = []
    for ratio in MULTI_SCALE_RATIOS:
        scaled = F.interpolate(image, size=(int(height * ratio), int(width * ratio)),
                               mode='bilinear', align_corners=False)
        views += [scaled, scaled.flip(-1)]
    return views


def _merged(logits: list, size) -> torch.Tensor:
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
                 multi_scale: bool = False) -> Evaluation:
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
    from ..models.segmentor import window_boxes
    for view in _views(images[0], multi_scale):
        windows += len(window_boxes(*view.shape[-2:], ours.test_cfg.crop_size,
                                    ours.test_cfg.stride))
    sides = {name: EvalSide(seconds=Spread.of(t), images_per_s=case.images / statistics.median(t))
             for name, t in timings.items()}
    return Evaluation(**sides, multi_scale=multi_scale, windows_per_image=windows,
                      slide_batch=slide_batch, max_abs_logit_diff=max_diff,
                      argmax_agreement=agree / pixels, argmax_equal=agree == pixels)


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


def compute_floor(case: Case, device: str, repeats: int = 20) -> Floor:
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
    return Floor(step_gflop=flop / 1e9, gemm_gflop_per_s=rate / 1e9, floor_seconds=flop / rate,
                 gemm_shape=[tokens, width, 4 * width])


