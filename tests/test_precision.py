"""``--amp tf32``: a real mmengine Runner trains a smoke job with TF32 matmuls allowed and
validates it with PyTorch's flags as they were (evaluation stays fp32 under every
training-precision option). CPU matmuls keep oneDNN's own precision: TF32 is for CUDA only."""
import pytest
import torch
from mmengine.hooks import Hook
from mmengine.runner import Runner

from harness.core.request import JobRequest
from harness.core.spec import load_table
from harness.prepare.job_config import build_config
from harness.runtime.precision import set_tf32_flags, tf32_flags

pytestmark = pytest.mark.e2e


class FlagProbe(Hook):
    """Records PyTorch's TF32 switches at each training and validation iteration."""

    def __init__(self):
        self.train, self.val, self.onednn = [], [], []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.train.append(tf32_flags())
        self.onednn.append(torch.backends.mkldnn.matmul.fp32_precision)

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.val.append(tf32_flags())


def test_tf32_while_training_and_pytorch_defaults_while_validating(tmp_path, synthetic_root):
    before = tf32_flags()  # PyTorch's defaults: (False, True), TF32 convolutions only
    onednn = torch.backends.mkldnn.matmul.fp32_precision
    assert before != (True, True)
    row = load_table('table3').row('seg-t-16')
    cfg = build_config(JobRequest(row=row, profile='smoke', seed=0, work_dir=tmp_path,
                                  data_root=synthetic_root, amp='tf32'))
    assert cfg.custom_hooks[-1] == {'type': 'TF32TrainingHook'}
    assert cfg.optim_wrapper.type == 'OptimWrapper'  # fp32 tensors: no autocast, no scaling
    cfg.train_cfg.update(max_iters=4, val_interval=2)
    cfg.visualizer.vis_backends = [dict(type='LocalVisBackend')]  # W&B is tested elsewhere
    runner = Runner.from_cfg(cfg)
    probe = FlagProbe()
    runner.register_hook(probe)
    try:
        runner.train()
        assert probe.train == [(True, True)] * 4
        assert probe.onednn == [onednn] * 4  # CPU matmuls as they were
        assert len(probe.val) >= 2 and set(probe.val) == {before}  # both validations
        assert tf32_flags() == before  # and as before once training is over
    finally:
        set_tf32_flags(*before)
