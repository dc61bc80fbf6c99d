"""The pixel cross-entropy, computed on (pixels, classes) rows.

mmseg's ``CrossEntropyLoss`` hands the full-resolution logits (N, C, H, W) to
``F.cross_entropy``, whose log-softmax then reduces over a strided channel axis: on CPU that
kernel and its backward are several times slower than the same reduction over contiguous
rows. ``ChannelsLastCrossEntropyLoss`` passes mmseg's loss the logits as (N*H*W, C) rows and
the labels as N*H*W values: the same terms, the same ignored pixels, the same mean. When the
logits are channels-last in memory (``BatchedSlideEncoderDecoder`` makes them so before the
upsampling), the rows are a view and nothing is copied.

``upsampled_cross_entropy`` goes further for the decode head's training loss: it takes the
low-resolution logits and never builds the full-resolution ones. Bilinear upsampling is
separable: the horizontal pass is a small matmul; the vertical pass makes each output row a
blend of two source rows, so output rows that share their two source rows form a group that
``torch.lerp`` produces in one call, small enough to stay in cache while the log-softmax,
the picked logit and the accuracy are taken from it. The backward recomputes each group
instead of keeping (N, C, H, W) activations alive.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from mmseg.models.losses import CrossEntropyLoss
from mmseg.registry import MODELS

# elements of one group of full-resolution logits: a few MB, so that a group stays in cache
GROUP_ELEMENTS = 1 << 20


@MODELS.register_module()
class ChannelsLastCrossEntropyLoss(CrossEntropyLoss):
    """mmseg's ``CrossEntropyLoss`` (same options, same value) on per-pixel rows of logits."""

    def forward(self, cls_score: torch.Tensor, label: torch.Tensor, weight=None, **kwargs):
        if cls_score.dim() != 4 or self.use_sigmoid or self.use_mask:
            return super().forward(cls_score, label, weight, **kwargs)
        rows = cls_score.permute(0, 2, 3, 1).reshape(-1, cls_score.shape[1])
        return super().forward(rows, label.reshape(-1),
                               None if weight is None else weight.reshape(-1), **kwargs)

    @property
    def fuses_upsampling(self) -> bool:
        """Whether ``upsampled`` computes this loss: the softmax cross-entropy without class
        weights, averaged (mmseg's decode heads pass no pixel weights without a sampler)."""
        return not (self.use_sigmoid or self.use_mask or self.class_weight is not None
                    or self.reduction != 'mean')

    def upsampled(self, logits: torch.Tensor, label: torch.Tensor,
                  ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This loss and mmseg's ``accuracy`` (top-1, %) of the logits bilinearly upsampled
        (``align_corners=False``) to the label's size, as mmseg's ``loss_by_feat`` computes
        them: low-resolution (N, C, h, w) logits, (N, H, W) labels."""
        loss_sum, correct, valid = upsampled_cross_entropy(logits, label, ignore_index)
        eps = torch.finfo(torch.float32).eps  # mmseg's guards against an empty average
        count = valid if self.avg_non_ignore else label.numel()
        loss = self.loss_weight * (loss_sum / (count + eps))
        accuracy = ((correct + eps) * (100.0 / (valid + eps))).reshape(1)
        return loss, accuracy


def _interpolation_weights(size_in: int, size_out: int, device=None) -> torch.Tensor:
    """(size_in, size_out): how much each source position gives each output position in
    ``F.interpolate(..., 'bilinear', align_corners=False)`` along one axis, taken from
    PyTorch's own linear interpolation of an identity."""
    eye = torch.eye(size_in, dtype=torch.float64, device=device)[None]
    return F.interpolate(eye, size=size_out, mode='linear', align_corners=False)[0]


@functools.lru_cache(maxsize=16)  # the same two sizes every training step
def _row_taps(size_in: int, size_out: int) -> tuple[tuple, tuple]:
    """Groups of output rows that blend the same two source rows, and each output row's weight
    on the second one."""
    weights = _interpolation_weights(size_in, size_out).t()
    groups, lam = [], []
    for out, row in enumerate(weights):
        taps = row.nonzero().flatten().tolist()
        first, second = (taps * 2)[:2]  # one tap at the borders: the row itself, twice
        lam.append(row[second].item() if second != first else 0.0)
        if groups and groups[-1][:2] == [first, second]:
            groups[-1][3] = out + 1
        else:
            groups.append([first, second, out, out + 1])
    return tuple(tuple(g) for g in groups), tuple(lam)


def _pieces(groups: tuple, rows: int):
    """The groups cut into pieces of at most ``rows`` output rows."""
    for first, second, start, stop in groups:
        for begin in range(start, stop, rows):
            yield first, second, begin, min(begin + rows, stop)


def _piece(rows, lam, label, ignore_index, classes, first, second, start, stop):
    """Output rows ``start:stop`` (which blend source rows ``first`` and ``second``) as
    (pixels, classes) logits, their labels as a column (ignored ones set to 0), and which
    pixels count."""
    z = torch.lerp(rows[first], rows[second], lam[start:stop, :, None]).view(-1, classes)
    target = label[:, start:stop].transpose(0, 1).reshape(-1, 1)
    valid = target != ignore_index
    return z, target.where(valid, 0), valid


class _UpsampledCrossEntropy(torch.autograd.Function):
    """Summed pixel cross-entropy of upsampled logits, plus counts of correct and valid
    pixels; see ``upsampled_cross_entropy``."""

    @staticmethod
    def forward(ctx, logits, label, ignore_index):
        n, c, h, w = logits.shape
        height, width = label.shape[-2:]
        # (w, W): the horizontal pass as a matmul
        across = _interpolation_weights(w, width, logits.device).to(logits.dtype)
        # rows of horizontally upsampled logits, channels last: (h, N, W*C)
        rows = (logits @ across).permute(2, 0, 3, 1).reshape(h, n, width * c)
        groups, lam = _row_taps(h, height)
        lam = torch.tensor(lam, dtype=logits.dtype, device=logits.device)[:, None]
        piece = max(1, GROUP_ELEMENTS // (n * width * c))
        loss_sum = logits.new_zeros(())
        correct = torch.zeros((), dtype=torch.long, device=logits.device)
        counted = torch.zeros((), dtype=torch.long, device=logits.device)
        for taps in _pieces(groups, piece):
            z, target, valid = _piece(rows, lam, label, ignore_index, c, *taps)
            log_p = z.log_softmax(1)
            picked = log_p.gather(1, target)
            loss_sum -= (picked * valid).sum()
            # mmseg's accuracy is topk(1) == label; a tie for the top counts as correct here
            correct += ((picked == log_p.amax(1, keepdim=True)) & valid).sum()
            counted += valid.sum()
        ctx.mark_non_differentiable(correct, counted)
        ctx.save_for_backward(rows, across, label, lam)
        ctx.groups, ctx.piece, ctx.ignore_index, ctx.shape = groups, piece, ignore_index, \
            (n, c, h, w)
        return loss_sum, correct, counted

    @staticmethod
    def backward(ctx, grad_sum, _grad_correct, _grad_counted):
        rows, across, label, lam = ctx.saved_tensors
        n, c, h, w = ctx.shape
        grad_rows = torch.zeros_like(rows)
        for first, second, start, stop in _pieces(ctx.groups, ctx.piece):
            z, target, valid = _piece(rows, lam, label, ctx.ignore_index, c,
                                      first, second, start, stop)
            grad = z.softmax(1)  # d(-log softmax[target]) / dz = softmax - one-hot
            grad.scatter_add_(1, target, grad.new_full(target.shape, -1.0))
            grad.mul_(valid * grad_sum)
            # each output row went to its two source rows with weights 1 - lam and lam
            blend = torch.cat([1 - lam[start:stop], lam[start:stop]], 1).t()
            both = blend @ grad.view(stop - start, -1)
            grad_rows[first] += both[0].view(n, -1)
            grad_rows[second] += both[1].view(n, -1)
        grad_logits = grad_rows.view(h, n, -1, c).permute(1, 3, 0, 2) @ across.t()
        return grad_logits, None, None


def upsampled_cross_entropy(logits: torch.Tensor, label: torch.Tensor, ignore_index: int):
    """Sum over the pixels of the cross-entropy of ``logits`` (N, C, h, w) bilinearly upsampled
    to ``label``'s (N, H, W), the number of pixels whose top logit is their label, and the
    number of pixels not ``ignore_index``; in fp32 whatever the logits' dtype (mmseg's loss
    runs in fp32 under autocast too). Memory: a few MB of full-resolution logits at a time."""
    with torch.autocast(logits.device.type, enabled=False):
        return _UpsampledCrossEntropy.apply(logits.float(), label, ignore_index)
