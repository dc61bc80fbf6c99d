"""The fast paths compute what stock mmseg computes: fused-attention blocks (same keys, same
outputs and gradients), batched sliding windows and batched multi-scale views (same logits,
same predictions)."""
import copy
import functools

import pytest
import torch
from mmengine.registry import init_default_scope
from mmengine.runner import Runner
from mmseg.models.backbones.vit import TransformerEncoderLayer
from mmseg.models.segmentors import EncoderDecoder, SegTTAModel
from mmseg.registry import MODELS

from harness.core.request import JobRequest
from harness.core.spec import load_table
from harness.measure.bench_cases import build_pair, model_cfg, train_batch
from harness.measure.bench_result import Case
from harness.models.fused_block import FusedEncoderLayer, fuse_layers
from harness.prepare.job_config import build_config

SMALL = Case('table6', 'seg-t-mask-16', crop=64, batch=2, image=(64, 150), images=1)
ROWS = [('table3', 'seg-s-16'), ('table6', 'seg-t-mask-16'), ('table6', 'seg-bd-mask-16')]


def _pair(table, row, crop=64, no_drop=False):
    """Ours and stock mmseg with the same weights (``no_drop``: deterministic training), a copy
    for each test: tests change the test_cfg, the head's class and the gradients."""
    return copy.deepcopy(_built_pair(table, row, crop, no_drop))


@functools.cache  # building the pair costs more than most tests here
def _built_pair(table, row, crop, no_drop):
    case = Case(table, row, crop=crop, batch=2, image=(crop, crop), images=1)
    ours, stock = build_pair(case, 'cpu', False), build_pair(case, 'cpu', True)
    if no_drop:  # rebuild both without stochastic layers, same weights
        init_default_scope('mmseg')
        cfgs = []
        for stock_side in (False, True):
            cfg = model_cfg(table, row, crop, stock=stock_side)
            cfg.backbone.drop_path_rate = 0.0
            if 'drop_rate' in cfg.decode_head:
                cfg.decode_head.drop_rate = 0.0
            cfgs.append(cfg)
        state = ours.state_dict()
        ours, stock = MODELS.build(cfgs[0]), MODELS.build(cfgs[1])
        ours.load_state_dict(state)
        stock.load_state_dict(state)
    return ours, stock


@pytest.mark.parametrize('table,row', ROWS)
def test_fused_model_keeps_stock_keys_and_outputs(table, row):
    ours, stock = _pair(table, row)
    assert isinstance(ours.backbone.layers[0], FusedEncoderLayer)
    assert type(stock.backbone.layers[0]) is TransformerEncoderLayer
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in stock.state_dict().items()}
    inputs, _ = train_batch(Case(table, row, 64, 2, (64, 64), 1), 'cpu')
    metas = [dict(img_shape=(64, 64))] * 2
    with torch.no_grad():
        diff = (ours.eval().encode_decode(inputs, metas)
                - stock.eval().encode_decode(inputs, metas)).abs().max().item()
    assert diff <= 1e-5


@pytest.mark.parametrize('table,row', ROWS)
def test_fused_model_trains_like_stock(table, row):
    """Loss, logged accuracy and every gradient equal in training mode (stochastic layers off):
    fused blocks, channels-last logits and the row-wise loss against mmseg's modules."""
    ours, stock = _pair(table, row, no_drop=True)
    inputs, samples = train_batch(Case(table, row, 64, 2, (64, 64), 1), 'cpu')
    losses, accuracy = [], []
    for model in (ours.train(), stock.train()):
        parts = model.loss(inputs, samples)
        loss = sum(v for k, v in parts.items() if 'loss' in k)
        loss.backward()
        losses.append(loss.item())
        accuracy.append(parts['decode.acc_seg'].item())
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    assert accuracy[0] == pytest.approx(accuracy[1], abs=1e-4)
    grads = dict(stock.named_parameters())
    for name, param in ours.named_parameters():
        assert (param.grad - grads[name].grad).abs().max().item() <= 1e-5, name


@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('avg_non_ignore', [False, True])
def test_row_wise_cross_entropy_equals_mmseg(channels_last, avg_non_ignore):
    """Same value and gradient as mmseg's CrossEntropyLoss, ignored pixels and weights too."""
    from mmseg.models.losses import CrossEntropyLoss

    from harness.models.loss import ChannelsLastCrossEntropyLoss
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 150, 37, 53, generator=gen) * 3
    if channels_last:
        logits = logits.contiguous(memory_format=torch.channels_last)
    label = torch.randint(0, 150, (2, 37, 53), generator=gen)
    label[0, :9] = 255
    weight = torch.rand(2, 37, 53, generator=gen)
    results = []
    for loss_type in (ChannelsLastCrossEntropyLoss, CrossEntropyLoss):
        loss_fn = loss_type(avg_non_ignore=avg_non_ignore)
        for w in (None, weight):
            x = logits.detach().clone().requires_grad_()
            loss = loss_fn(x, label, weight=w, ignore_index=255)
            loss.backward()
            results.append((loss.detach(), x.grad))
    for (ours, ours_grad), (stock, stock_grad) in zip(results[:2], results[2:]):
        assert ours.shape == stock.shape == ()
        assert (ours - stock).abs().item() <= 1e-5 * stock.abs().item()
        assert (ours_grad - stock_grad).abs().max().item() <= 1e-9
        assert ours_grad[0, :, :9].abs().max().item() == 0  # ignored pixels: no gradient



@pytest.mark.parametrize('low,high', [((32, 32), (512, 512)), ((5, 7), (64, 50)),
                                      ((8, 6), (13, 200)), ((4, 4), (4, 4))])
@pytest.mark.parametrize('avg_non_ignore', [False, True])
@pytest.mark.parametrize('one_row_pieces', [False, True])
def test_upsampled_cross_entropy_equals_mmseg_loss_by_feat(low, high, avg_non_ignore,
                                                           one_row_pieces, monkeypatch):
    """Loss, accuracy and gradient from the low-resolution logits equal what mmseg's
    ``loss_by_feat`` computes (``resize`` to the labels, CrossEntropyLoss, ``accuracy``), for
    upsampling by whole and fractional factors, none, and groups cut into one-row pieces."""
    from mmseg.models.losses import CrossEntropyLoss, accuracy
    from mmseg.models.utils import resize

    from harness.models import loss as loss_module
    if one_row_pieces:
        monkeypatch.setattr(loss_module, 'GROUP_ELEMENTS', 1)
    classes = 150 if low == (32, 32) else 7
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, classes, *low, generator=gen) * 3
    label = torch.randint(0, classes, (2, *high), generator=gen)
    label[0, :high[0] // 3] = 255
    label[1, :, -3:] = 255
    options = dict(avg_non_ignore=avg_non_ignore, loss_weight=0.7)
    ours_fn = loss_module.ChannelsLastCrossEntropyLoss(**options)
    assert ours_fn.fuses_upsampling
    x_ours, x_stock = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ours, ours_acc = ours_fn.upsampled(x_ours, label, 255)
    full = resize(x_stock, size=high, mode='bilinear', align_corners=False)
    stock = CrossEntropyLoss(**options)(full, label, ignore_index=255)
    stock_acc = accuracy(full, label, ignore_index=255)
    ours.backward()
    stock.backward()
    assert ours.shape == stock.shape == () and ours_acc.shape == stock_acc.shape == (1,)
    assert ours.item() == pytest.approx(stock.item(), rel=1e-6)
    assert ours_acc.item() == pytest.approx(stock_acc.item(), rel=1e-6)
    assert 0 < stock_acc.item() < 100
    assert (x_ours.grad - x_stock.grad).abs().max().item() <= 1e-5 * x_stock.grad.abs().max()


def test_upsampled_cross_entropy_under_bf16_autocast_runs_in_fp32():
    """bf16 logits (autocast) give the fp32 loss of those logits, and a bf16 gradient."""
    from harness.models.loss import ChannelsLastCrossEntropyLoss
    loss_fn = ChannelsLastCrossEntropyLoss(avg_non_ignore=True)
    gen = torch.Generator().manual_seed(2)
    logits = (torch.randn(2, 150, 8, 8, generator=gen) * 3).bfloat16().requires_grad_()
    label = torch.randint(0, 150, (2, 128, 128), generator=gen)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        loss, _ = loss_fn.upsampled(logits, label, 255)
    reference, _ = loss_fn.upsampled(logits.detach().float(), label, 255)
    loss.backward()
    assert loss.dtype == torch.float32 and logits.grad.dtype == torch.bfloat16
    assert loss.item() == pytest.approx(reference.item(), rel=1e-6)

def test_drop_path_reaches_the_attention_branch():
    """Official block: x + drop_path(attn(x)). With the MLP silenced, a dropped sample's
    residual is exactly zero; mmseg's layer never drops the attention branch."""
    torch.manual_seed(0)
    layers = torch.nn.ModuleList(TransformerEncoderLayer(32, 4, 64, drop_path_rate=0.5)
                                 for _ in range(2))
    for layer in layers:
        torch.nn.init.zeros_(layer.ffn.layers[1].weight)
        torch.nn.init.zeros_(layer.ffn.layers[1].bias)
    fuse_layers(layers[:1])
    fused, stock = layers[0].train(), layers[1].train()
    fused.load_state_dict(stock.state_dict())
    x = torch.randn(64, 5, 32)
    dropped = [(layer(x) - x).flatten(1).abs().amax(1) == 0 for layer in (fused, stock)]
    assert 0 < int(dropped[0].sum()) < 64  # some samples lose the branch, not all
    assert int(dropped[1].sum()) == 0
    with pytest.raises(TypeError, match='expected mmseg TransformerEncoderLayer'):
        fuse_layers(layers[:1])  # already fused


def _batched_and_looped(ours, shape):
    images = torch.randn(2, 3, *shape, generator=torch.Generator().manual_seed(3))
    metas = [dict(img_shape=shape, ori_shape=shape)] * 2
    with torch.no_grad():
        batched = ours.slide_inference(images, metas)
        looped = EncoderDecoder.slide_inference(ours, images, [dict(m) for m in metas])
    assert batched.shape == looped.shape == (2, 150, *shape)
    return batched, looped


@pytest.mark.parametrize('table, row, shape', [
    *[(SMALL.table, SMALL.row, shape) for shape in [(150, 64), (64, 150), (40, 100), (64, 64)]],
    ('table3', 'seg-t-16', (64, 150))])  # a linear decoder (mmseg's FCNHead)
@pytest.mark.parametrize('slide_batch', [1, 3, 16])
def test_batched_windows_equal_the_stock_loop(table, row, shape, slide_batch):
    """Same model, same windows: only the batching (and the upsampling a few classes at a
    time) differs from mmseg's per-window loop."""
    ours, _ = _pair(table, row)
    ours.eval().test_cfg.slide_batch = slide_batch
    batched, looped = _batched_and_looped(ours, shape)
    assert (batched - looped).abs().max().item() <= 1e-5
    assert torch.equal(batched.argmax(1), looped.argmax(1))


def test_a_head_with_its_own_predict_gets_whole_windows():
    """A decode head that overrides ``predict`` is called as mmseg calls it, per window batch,
    instead of being taken apart into forward + resize."""
    ours, _ = _pair(SMALL.table, SMALL.row)
    calls = []

    class OwnPredict(type(ours.decode_head)):
        def predict(self, inputs, batch_img_metas, test_cfg):
            calls.append(len(batch_img_metas))
            return super().predict(inputs, batch_img_metas, test_cfg)

    ours.decode_head.__class__ = OwnPredict
    ours.eval().test_cfg.slide_batch = 3
    batched, looped = _batched_and_looped(ours, (64, 150))  # 3 windows an image, 2 images
    assert calls == [3, 3, 2, 2, 2]  # ours: 6 windows by 3; mmseg: each window of both images
    assert (batched - looped).abs().max().item() <= 1e-5


def test_windows_that_leave_pixels_uncovered_are_refused():
    ours, _ = _pair(SMALL.table, SMALL.row)
    ours.eval().test_cfg.stride = (80, 80)  # longer than the 64-pixel window
    with pytest.raises(ValueError, match='leave pixels of a 64x200 image uncovered'):
        ours.slide_inference(torch.zeros(1, 3, 64, 200), [dict(img_shape=(64, 200))])


@pytest.mark.e2e
def test_multi_scale_views_batched_match_stock_tta(tmp_path, synthetic_root):
    """The smoke row's multi-scale + flip evaluation on real pipeline output: our TTA model
    (all views' windows pooled) and mmseg's SegTTAModel (view by view) predict the same."""
    row = load_table('table6').row('seg-t-mask-16')
    cfg = build_config(JobRequest(row=row, profile='smoke', seed=0, work_dir=tmp_path,
                                  data_root=synthetic_root, checkpoint=tmp_path / 'unused.pth',
                                  multi_scale=True, released=True))  # built from the row
    assert cfg.model.type == 'BatchedSegTTAModel'
    init_default_scope('mmseg')
    cfg.test_dataloader.batch_size = 1
    loader = Runner.build_dataloader(cfg.test_dataloader)
    torch.manual_seed(0)
    ours = MODELS.build(cfg.model).eval()
    ours.module.init_weights()
    ours.module.test_cfg.slide_batch = 5
    stock_module = cfg.model.module.copy()  # mmseg's EncoderDecoder: one window per forward
    stock_module.type = 'EncoderDecoder'
    stock_module.test_cfg.pop('slide_batch')
    stock = SegTTAModel(module=MODELS.build(stock_module)).eval()
    stock.module.load_state_dict(ours.module.state_dict())
    for n, batch in enumerate(loader):
        views = len(batch['inputs'])
        assert views == 12  # 6 scales x 2 flips
        with torch.no_grad():
            got, want = ours.test_step(batch), stock.test_step(batch)
        assert torch.equal(got[0].pred_sem_seg.data, want[0].pred_sem_seg.data)
        if n == 2:
            break
