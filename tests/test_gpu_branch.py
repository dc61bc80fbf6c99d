"""The GPU branch of each device-dependent path, run on CPU tensors (``branches.forced``) and
checked against the CPU branch on the same inputs: the training loss (value, accuracy and
every gradient), sliding-window evaluation single- and multi-scale (logits and predictions),
and the training step under bf16 and fp16. (``--amp tf32`` changes no CPU arithmetic: its flags
select CUDA kernels only, so on CPU tensors it would repeat the fp32 case; tests/test_precision.py
checks the flags a job sets and restores.)

Tolerances follow from the precision of the arithmetic that differs between the branches:

- fp32, machine epsilon ``EPS32 = 2**-23``: a sum of n terms rounds to within n * EPS32 of the
  sum of their magnitudes; torch reduces in pairwise blocks, where the factor is log2(n).
- bf16 and fp16 round every element of an autocast op's output to 8 and 11 significant bits:
  unit roundoffs ``U_BF16 = 2**-8`` and ``U_FP16 = 2**-11``.
- Where many low-precision roundings meet (a mean over pixels, a chain of matmuls), worst-case
  bounds are too loose to catch anything: independent roundings add up like a random walk,
  n of them staying within LAMBDA * sqrt(n) * u but for a chance below
  2 * exp(-LAMBDA**2 / 2) (Higham and Mary's probabilistic rounding error analysis).

Each test also checks that each branch ran its own code, so that a fast path that silently
stops applying (both sides on one branch) fails instead of comparing a branch with itself.
"""
import contextlib
import dataclasses
import functools
import math

import pytest
import torch
from mmengine.optim import build_optim_wrapper
from mmengine.optim.optimizer import amp_optimizer_wrapper
from mmengine.registry import init_default_scope
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

import harness.runtime.precision  # noqa: F401 - registers the precision wrappers and hook
from harness.core.request import JobRequest
from harness.core.spec import load_table
from harness.models import BatchedSegTTAModel
from harness.models.branches import forced, use_gpu_branch
from harness.models.loss import ChannelsLastCrossEntropyLoss
from harness.prepare.job_config import build_config
from harness.prepare.model import build_model

EPS32 = 2.0 ** -23
U_BF16 = 2.0 ** -8
U_FP16 = 2.0 ** -11
LAMBDA = 4.0

MASK, LINEAR = ('table6', 'seg-t-mask-16'), ('table3', 'seg-t-16')
CROP = 64  # the smoke profile's crop: 4x4 logits from 16-pixel patches
IGNORE = 255
PIXELS = 2 * CROP * CROP  # a training batch of two images
VALID_PIXELS = PIXELS * 7 // 8  # the top eighth of each label is ignored

# fp32 training: the loss's per-pixel terms differ by a few roundings (two ways of
# upsampling), their mean by its summation order; the upsampling's backward sums 32 x 32
# output pixels into each low-resolution logit (16x upsampling), in another order on each
# branch, and every parameter's gradient is linear in that one through the same ops
FP32_LOSS_RTOL = 4 * math.log2(PIXELS) * EPS32
FP32_GRAD_RTOL = 32 * 32 * EPS32
# mmseg's logged accuracy (%) may differ by one pixel: where two classes' upsampled logits tie
# within rounding, the two upsamplings may pick different top classes
ACCURACY_ATOL = 100.0 / VALID_PIXELS


# --- shared set-up ---------------------------------------------------------------------------

def _model(table_row=MASK):
    """The row's smoke-sized model, initialised as its job initialises it."""
    torch.manual_seed(0)
    model = build_model(load_table(table_row[0]).row(table_row[1]), 'smoke')
    model.init_weights()
    return model


def _train_batch(seed=1, batch=2):
    """Normalised images and labels in 0..149, the top eighth of each image ignored."""
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, 3, CROP, CROP, generator=gen)
    samples = []
    for _ in range(batch):
        label = torch.randint(0, 150, (1, CROP, CROP), generator=gen)
        label[:, :CROP // 8] = IGNORE
        sample = SegDataSample(gt_sem_seg=PixelData(data=label))
        sample.set_metainfo(dict(img_shape=(CROP, CROP), pad_shape=(CROP, CROP)))
        samples.append(sample)
    return images, samples


@contextlib.contextmanager
def _counting(owner, name):
    """The calls of ``owner.name`` (an instance's method or a class's function) inside the
    block, counted; the calls go through unchanged."""
    original = getattr(owner, name)
    calls = []

    @functools.wraps(original)
    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    setattr(owner, name, counted)
    try:
        yield calls
    finally:
        if isinstance(owner, type):
            setattr(owner, name, original)
        else:
            delattr(owner, name)  # the class's method shows through again


@dataclasses.dataclass
class Step:
    parts: dict  # what the model's loss returns: the loss and the logged accuracy
    total: torch.Tensor
    logits: torch.Tensor  # the decode head's output, its gradient retained
    grads: dict  # every parameter's gradient


def _training_step(model, branch, context=contextlib.nullcontext, backward=None):
    """The training loss on ``branch``, forward (inside ``context()``) and backward (by
    ``backward(total)``, default ``total.backward()``). Stochastic depth draws the same masks
    on both branches: the same seed, and nothing before the head's output draws differently."""
    model.train().zero_grad()
    images, samples = _train_batch()
    seen = {}

    def keep(module, args, output):
        output.retain_grad()
        seen['logits'] = output

    hook = model.decode_head.register_forward_hook(keep)
    torch.manual_seed(5)
    try:
        with forced(branch), context():
            parts = model.loss(images, samples)
            total, _ = model.parse_losses(parts)
    finally:
        hook.remove()
    (backward or torch.Tensor.backward)(total)
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    assert len(grads) == len(list(model.parameters()))  # every parameter was reached
    return Step(parts, total.detach(), seen['logits'], grads)


def _on_both_branches(model, run):
    """``run(branch)`` on the GPU and the CPU branch, checking that the CPU one took the fused
    loss (``upsampled``) and the GPU one mmseg's ``loss_by_feat``."""
    head = model.decode_head
    results = {}
    for branch in ('gpu', 'cpu'):
        with _counting(ChannelsLastCrossEntropyLoss, 'upsampled') as fused, \
                _counting(head, 'loss_by_feat') as stock:
            results[branch] = run(branch)
        assert (len(fused), len(stock)) == ((0, 1) if branch == 'gpu' else (1, 0)), branch
    return results['gpu'], results['cpu']


def _close(ours, reference, rtol, what):
    """Largest difference within ``rtol`` of the reference's largest magnitude."""
    scale = reference.abs().max().item()
    diff = (ours.float() - reference.float()).abs().max().item()
    assert diff <= rtol * scale, f'{what}: {diff:.3g} > {rtol:.3g} x {scale:.3g}'


def _grads_close(gpu, cpu, rtol):
    assert gpu.keys() == cpu.keys()
    for name in cpu:
        _close(gpu[name], cpu[name], rtol, name)


# --- the decision itself ---------------------------------------------------------------------

def test_gpu_branch_follows_the_device_unless_forced():
    cpu = torch.zeros(1)
    meta = torch.zeros(1, device='meta')  # any device but the CPU takes the GPU branch
    assert not use_gpu_branch(cpu) and use_gpu_branch(meta)
    with forced('gpu'):
        assert use_gpu_branch(cpu)
        with forced('cpu'):
            assert not use_gpu_branch(meta)
        assert use_gpu_branch(cpu)
    assert not use_gpu_branch(cpu)
    with pytest.raises(ValueError, match="unknown branch 'cuda'"):
        with forced('cuda'):
            pass


# --- training loss ---------------------------------------------------------------------------

@pytest.mark.parametrize('table_row', [MASK, LINEAR], ids=['mask', 'linear'])
def test_gpu_branch_training_loss_and_gradients_equal_the_cpu_branch(table_row):
    """fp32. The branches share the head's logits and part from there: the CPU one upsamples
    with a matmul and lerps, fused with the loss; the GPU one makes them channels-last and
    hands them to mmseg's ``loss_by_feat`` (``F.interpolate``, mmseg's loss and accuracy)."""
    model = _model(table_row)
    gpu, cpu = _on_both_branches(model, lambda branch: _training_step(model, branch))
    assert torch.equal(gpu.logits, cpu.logits)  # the same forward up to the branch
    assert gpu.parts.keys() == cpu.parts.keys() == {'decode.loss_ce', 'decode.acc_seg'}
    assert gpu.total.item() == pytest.approx(cpu.total.item(), rel=FP32_LOSS_RTOL)
    assert gpu.parts['decode.acc_seg'].item() == pytest.approx(
        cpu.parts['decode.acc_seg'].item(), abs=ACCURACY_ATOL)
    _close(gpu.logits.grad, cpu.logits.grad, FP32_GRAD_RTOL, 'logits')
    _grads_close(gpu.grads, cpu.grads, FP32_GRAD_RTOL)


# --- sliding-window evaluation ---------------------------------------------------------------

# Both branches run the same window batches through the same network; the CPU branch resizes
# each window's logits a few classes at a time, the GPU one all classes at once. Bilinear
# resizing is per channel, and each output logit is a 4-tap blend added into at most 4
# overlapping windows, then divided: 16 * EPS32 of the largest logit (the branches agree bit for
# bit today; the bound is what a change in the resize's vectorisation may cost)
SLIDE_RTOL = 16 * EPS32


def _slide_on_both_branches(model, run):
    """``run()`` on the GPU and the CPU branch, checking that the CPU one took the head apart
    (no ``encode_decode``) and the GPU one sent whole window batches through ``encode_decode``."""
    results = {}
    for branch in ('gpu', 'cpu'):
        with _counting(model, 'encode_decode') as whole, forced(branch), torch.no_grad():
            results[branch] = run()
        assert bool(whole) == (branch == 'gpu'), branch
    return results['gpu'], results['cpu']


@pytest.mark.parametrize('table_row', [MASK, LINEAR], ids=['mask', 'linear'])
def test_gpu_branch_sliding_window_logits_equal_the_cpu_branch(table_row):
    """Single scale: two 64x150 images in 64-pixel windows with stride 48 (3 windows an
    image), 4 windows per forward so that a batch spans both images."""
    model = _model(table_row).eval()
    model.test_cfg.slide_batch = 4
    images = torch.randn(2, 3, CROP, 150, generator=torch.Generator().manual_seed(3))
    metas = [dict(img_shape=(CROP, 150), ori_shape=(CROP, 150))] * 2
    gpu, cpu = _slide_on_both_branches(model, lambda: model.slide_inference(images, metas))
    assert gpu.shape == cpu.shape == (2, 150, CROP, 150)
    _close(gpu, cpu, SLIDE_RTOL, 'logits')
    assert torch.equal(gpu.argmax(1), cpu.argmax(1))


def _tta_batch(images):
    """Multi-scale + flip views of ``images`` (N, 3, H, W) as mmseg's test-time augmentation
    hands them to the TTA model: per view, a list of images and one of their data samples."""
    data = {'inputs': [], 'data_samples': []}
    height, width = images.shape[-2:]
    for ratio in (0.75, 1.0, 1.5):
        size = (round(height * ratio), round(width * ratio))
        scaled = torch.nn.functional.interpolate(images, size=size, mode='bilinear')
        for flip in (False, True):
            view = scaled.flip(-1) if flip else scaled
            data['inputs'].append(list(view))
            samples = []
            for _ in view:
                sample = SegDataSample()
                sample.set_metainfo(dict(img_shape=size, ori_shape=(height, width), flip=flip,
                                         flip_direction='horizontal', img_path='synthetic.png'))
                samples.append(sample)
            data['data_samples'].append(samples)
    return data


def test_gpu_branch_multi_scale_logits_and_predictions_equal_the_cpu_branch():
    """``BatchedSegTTAModel``: 3 scales x 2 flips of two images, every view's windows pooled.
    Each view's logits (flipped back, resized to the image) and the merged predictions."""
    model = _model().eval()
    model.test_cfg.slide_batch = 5
    tta = BatchedSegTTAModel(module=model).eval()
    images = torch.rand(2, 3, CROP, 100, generator=torch.Generator().manual_seed(4)) * 255
    merge, views = tta.merge_preds, []

    def recording_merge(per_image):
        views.append([[sample.seg_logits.data for sample in samples] for samples in per_image])
        return merge(per_image)

    tta.merge_preds = recording_merge
    gpu, cpu = _slide_on_both_branches(model, lambda: [
        sample.pred_sem_seg.data for sample in tta.test_step(_tta_batch(images))])
    gpu_views, cpu_views = views
    assert len(cpu_views) == 2 and all(len(v) == 6 for v in cpu_views)  # images x views
    for gpu_image, cpu_image in zip(gpu_views, cpu_views):
        for gpu_view, cpu_view in zip(gpu_image, cpu_image):
            assert gpu_view.shape == cpu_view.shape == (150, CROP, 100)
            _close(gpu_view, cpu_view, SLIDE_RTOL, 'view logits')
    assert all(torch.equal(g, c) for g, c in zip(gpu, cpu))


# --- the training step under each precision option -------------------------------------------

# autocast matmuls between the smoke mask model's logits and its first layer: 4 blocks (2 in
# the encoder, 2 in the decoder) of 4 projections and 2 attention products, the patch
# embedding, the decoder's 3 projections and the mask product
MATMULS = 4 * 6 + 1 + 3 + 1


def _check_low_precision(gpu, cpu, u, dtype):
    """Both branches under autocast at unit roundoff ``u``, from the same low-precision logits
    z. The GPU branch upsamples z in that precision (each upsampled logit rounded, by at most
    u * max|z|) before mmseg's fp32 loss; the CPU branch upsamples in fp32. A pixel's
    cross-entropy moves by at most twice its logits' largest change (the softmax minus the
    one-hot has an L1 norm of at most 2): 2 * u * max|z|; the mean over the labelled pixels
    by LAMBDA / sqrt(VALID_PIXELS) of that. The logits' gradient: the same softmax change
    (2 * u * max|z| of the largest gradient), then 3 roundings to the low precision (the GPU
    branch's gradient of the upsampled logits, its upsampling's backward, the CPU branch's
    cast back): (2 * max|z| + 3) * u. On the way to the parameters each of the MATMULS
    products rounds its output again: LAMBDA * sqrt(MATMULS) * u more."""
    assert gpu.logits.dtype == dtype and torch.equal(gpu.logits, cpu.logits)
    assert gpu.total.dtype == cpu.total.dtype == torch.float32
    assert gpu.parts.keys() == cpu.parts.keys()
    z = cpu.logits.abs().max().item()
    assert abs(gpu.total.item() - cpu.total.item()) <= \
        2 * u * z * LAMBDA / math.sqrt(VALID_PIXELS)
    assert gpu.parts['decode.acc_seg'].item() == pytest.approx(
        cpu.parts['decode.acc_seg'].item(), abs=ACCURACY_ATOL)
    logits_rtol = (2 * z + 3) * u
    _close(gpu.logits.grad, cpu.logits.grad, logits_rtol, 'logits')
    _grads_close(gpu.grads, cpu.grads, logits_rtol + LAMBDA * math.sqrt(MATMULS) * u)


def _job_config(amp):
    row = load_table(MASK[0]).row(MASK[1])
    return build_config(JobRequest(row=row, profile='smoke', seed=0, work_dir=None,
                                   data_root=None, amp=amp))


def test_gpu_branch_under_the_bf16_wrapper_equals_the_cpu_branch():
    """``--amp bf16``: the job's own optimizer wrapper and its autocast context, which runs
    on the parameters' device, here the CPU: CUDA's autocast (another list of ops cast to
    bf16) cannot run without a GPU, torch turns it off."""
    init_default_scope('mmseg')
    cfg = _job_config('bf16')
    assert cfg.optim_wrapper.type == 'BF16AutocastOptimWrapper'
    model = _model()
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    gpu, cpu = _on_both_branches(model, lambda branch: _training_step(
        model, branch, lambda: wrapper.optim_context(model)))
    _check_low_precision(gpu, cpu, U_BF16, torch.bfloat16)


def test_gpu_branch_under_fp16_loss_scaling_equals_the_cpu_branch(monkeypatch):
    """``--amp fp16``: mmengine's ``AmpOptimWrapper`` from the job config, its own scaled
    backward and its step (unscale, look for infs, SGD step, scale update). Two of its parts
    cannot run on a CPU and are replaced, nothing else: it refuses to be built without CUDA,
    and its ``torch.cuda.amp.GradScaler`` turns itself off there, so the same GradScaler class
    is given the CPU device; and mmengine's autocast allows only bf16 on CPUs, so torch's CPU
    autocast runs the wrapper's dtype. What the comparison checks beyond the bf16 one: the
    loss scale keeps the small per-pixel gradients (about 1e-6 here) out of fp16's subnormal
    range on the GPU branch, and the step unscales them."""
    init_default_scope('mmseg')
    cfg = _job_config('fp16')
    assert (cfg.optim_wrapper.type, cfg.optim_wrapper.dtype, cfg.optim_wrapper.loss_scale) \
        == ('AmpOptimWrapper', 'float16', 'dynamic')
    model = _model()
    with pytest.raises(AssertionError, match='only available training on gpu'):
        build_optim_wrapper(model, cfg.optim_wrapper)
    assert issubclass(torch.cuda.amp.GradScaler, torch.amp.GradScaler)
    monkeypatch.setattr(amp_optimizer_wrapper, 'is_cuda_available', lambda: True)
    monkeypatch.setattr(amp_optimizer_wrapper, 'GradScaler',
                        functools.partial(torch.amp.GradScaler, 'cpu'))
    weights = {k: v.clone() for k, v in model.state_dict().items()}

    def step(branch):
        model.load_state_dict(weights)  # the same weights before each branch's step
        wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        assert wrapper.cast_dtype == torch.float16 and wrapper.loss_scaler.is_enabled()
        scale = wrapper.loss_scaler.get_scale()

        def scaled_backward_and_step(total):
            wrapper.backward(total)
            wrapper.step()  # unscales the gradients in place before the SGD step

        result = _training_step(model, branch,
                                lambda: torch.autocast('cpu', dtype=wrapper.cast_dtype),
                                scaled_backward_and_step)
        assert wrapper.loss_scaler.get_scale() == scale == 65536.0  # no inf: not skipped
        result.logits.grad.div_(scale)  # the retained gradient is the scaled one
        return result

    gpu, cpu = _on_both_branches(model, step)
    _check_low_precision(gpu, cpu, U_FP16, torch.float16)
