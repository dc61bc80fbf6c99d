"""Sliding-window evaluation with the windows batched; the training loss on fast paths.

mmseg's ``EncoderDecoder.slide_inference`` runs the network on one window at a time and pads
every window's logits to the full image before adding them up. ``BatchedSlideEncoderDecoder``
cuts the same windows (same crop, same stride, same edge rule), runs them ``slide_batch`` at a
time, and adds each window's logits into its place; the overlap average is the same.
``BatchedSegTTAModel`` does this across all views of multi-scale + flip evaluation at once:
windows of every view that share a shape go through the network together.
"""
from __future__ import annotations

import torch
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.segmentors import EncoderDecoder, SegTTAModel
from mmseg.registry import MODELS
from mmseg.utils import add_prefix

from .branches import use_gpu_branch
from .loss import ChannelsLastCrossEntropyLoss

# classes of a window upsampled at a time on CPUs (8 MB at 512x512): a whole window's
# full-size logits are ~160 MB of fresh memory, which costs more in page faults than the
# upsampling (GPUs reuse cached memory: they upsample each batch of windows in one call)
UPSAMPLE_CLASSES = 8


def window_boxes(height: int, width: int, crop: tuple[int, int],
                 stride: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """(y1, y2, x1, x2) of each window, as mmseg's slide_inference places them: a regular grid,
    the last row/column moved back inside the image, windows clipped to small images."""
    (h_crop, w_crop), (h_stride, w_stride) = crop, stride
    h_grids = max(height - h_crop + h_stride - 1, 0) // h_stride + 1
    w_grids = max(width - w_crop + w_stride - 1, 0) // w_stride + 1
    boxes = []
    for i in range(h_grids):
        for j in range(w_grids):
            y2, x2 = min(i * h_stride + h_crop, height), min(j * w_stride + w_crop, width)
            boxes.append((max(y2 - h_crop, 0), y2, max(x2 - w_crop, 0), x2))
    return boxes


@MODELS.register_module()
class BatchedSlideEncoderDecoder(EncoderDecoder):
    """``EncoderDecoder`` whose sliding-window inference runs ``test_cfg.slide_batch`` windows
    per forward (default 8), and whose training loss avoids the full-resolution logits'
    slow paths; everything else is mmseg's."""

    def _decode_head_forward_train(self, inputs, data_samples) -> dict:
        """mmseg's decode-head loss (head forward, then ``loss_by_feat``: logits upsampled to
        the labels, pixel loss, logged accuracy), computed faster with the same values. On the
        CPU branch (``use_gpu_branch``), ``ChannelsLastCrossEntropyLoss.upsampled`` computes all
        three from the low-resolution logits. On the GPU branch (the fused loss was measured
        faster on CPUs only) the logits are made channels-last before mmseg's
        ``loss_by_feat``, so its upsampling and the row-wise pixel loss work on contiguous rows
        of classes."""
        head = self.decode_head
        logits = head(inputs)
        loss = head.loss_decode
        if (not use_gpu_branch(logits) and isinstance(loss, ChannelsLastCrossEntropyLoss)
                and loss.fuses_upsampling and head.sampler is None and not head.align_corners):
            labels = head._stack_batch_gt(data_samples).squeeze(1)
            value, accuracy = loss.upsampled(logits, labels, head.ignore_index)
            return {f'decode.{loss.loss_name}': value, 'decode.acc_seg': accuracy}
        logits = logits.contiguous(memory_format=torch.channels_last)
        return add_prefix(head.loss_by_feat(logits, data_samples), 'decode')

    def slide_inference(self, inputs: torch.Tensor, batch_img_metas: list[dict]) -> torch.Tensor:
        return self.slide_views([inputs])[0]

    @torch.no_grad()
    def slide_views(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """Sliding-window logits of each view (N, C, H, W); all views' windows are pooled."""
        crop, stride = self.test_cfg.crop_size, self.test_cfg.stride
        batch = max(1, int(self.test_cfg.get('slide_batch', 8)))
        logits, counts, windows = [], [], {}
        for v, view in enumerate(views):
            n, _, height, width = view.shape
            logits.append(view.new_zeros((n, self.out_channels, height, width)))
            counts.append(view.new_zeros((1, 1, height, width)))
            boxes = window_boxes(height, width, crop, stride)
            # what a rehearsal reports: the windows and images this model evaluated so far
            self.windows_evaluated = getattr(self, 'windows_evaluated', 0) + n * len(boxes)
            self.images_evaluated = getattr(self, 'images_evaluated', 0) + n
            for y1, y2, x1, x2 in boxes:
                counts[v][..., y1:y2, x1:x2] += 1
                for i in range(n):  # windows of one shape can share a forward
                    windows.setdefault((y2 - y1, x2 - x1), []).append((v, i, y1, y2, x1, x2))
            if not counts[v].all():
                raise ValueError(f'sliding windows {crop} with stride {stride} leave pixels of '
                                 f'a {height}x{width} image uncovered')
        head = self.decode_head
        # on the CPU branch, mmseg's own steps (head forward, then its resize to the window)
        # taken apart, so that the resize runs on a few classes at a time; bilinear resizing is
        # per channel, so the logits are the same
        by_classes = (not use_gpu_branch(views[0])
                      and type(self).encode_decode is EncoderDecoder.encode_decode
                      and type(head).predict is BaseDecodeHead.predict)
        for shape, group in windows.items():
            metas = [dict(img_shape=shape)]  # the decode head resizes its logits to this
            for start in range(0, len(group), batch):
                chunk = group[start:start + batch]
                crops = torch.stack([views[v][i, :, y1:y2, x1:x2]
                                     for v, i, y1, y2, x1, x2 in chunk])
                if by_classes:
                    low = head.forward(self.extract_feat(crops))
                    for (v, i, y1, y2, x1, x2), window in zip(chunk, low):
                        canvas = logits[v][i, :, y1:y2, x1:x2]
                        for c in range(0, len(window), UPSAMPLE_CLASSES):
                            part = window[None, c:c + UPSAMPLE_CLASSES]
                            canvas[c:c + UPSAMPLE_CLASSES] += head.predict_by_feat(part, metas)[0]
                else:
                    out = self.encode_decode(crops, metas * len(chunk))
                    for (v, i, y1, y2, x1, x2), window in zip(chunk, out):
                        logits[v][i, :, y1:y2, x1:x2] += window
        return [lg.div_(cnt) for lg, cnt in zip(logits, counts)]  # in place: no second canvas


@MODELS.register_module()
class BatchedSegTTAModel(SegTTAModel):
    """Multi-scale + flip evaluation whose views share batched window forwards; the logits of
    each view and their merge (softmax average) are mmseg's ``SegTTAModel`` ones."""

    def test_step(self, data):
        module = self.module
        if not isinstance(module, BatchedSlideEncoderDecoder) or module.test_cfg.mode != 'slide':
            return super().test_step(data)
        num_views = len(data['inputs'])
        views = [module.data_preprocessor({key: value[k] for key, value in data.items()}, False)
                 for k in range(num_views)]
        logits = module.slide_views([view['inputs'] for view in views])
        predictions = [module.postprocess_result(lg, view['data_samples'])
                       for lg, view in zip(logits, views)]
        return self.merge_preds(list(zip(*predictions)))
