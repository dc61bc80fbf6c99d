"""Every row of both tables builds, in both profiles, through mmseg's own registries."""
import copy

import pytest
import torch
from mmseg.registry import MODELS
from mmseg.utils import register_all_modules

from harness.core.profiles import SMOKE
from harness.core.request import JobRequest
from harness.core.spec import load_table
from harness.prepare.job_config import build_config

register_all_modules()
ROWS = [row for name in ('table3', 'table6') for row in load_table(name).rows]
WIDTH = {'ViT-Ti': 192, 'ViT-S': 384, 'ViT-B': 768, 'DeiT-B distilled (IN-1k)': 768,
         'ViT-L': 1024}


def _config(row, profile, tmp_path, gpus=1):
    job = JobRequest(row=row, profile=profile, seed=0, work_dir=tmp_path / 'job',
                     data_root=tmp_path / 'data', gpus=gpus)
    return build_config(job)


@pytest.mark.parametrize('row', ROWS, ids=lambda r: r.id)
def test_full_profile_is_the_row(row, tmp_path):
    cfg = _config(row, 'full', tmp_path)
    backbone, head = cfg.model.backbone, cfg.model.decode_head
    assert backbone.patch_size == row.patch_size
    assert backbone.embed_dims == WIDTH[row.backbone]
    assert backbone.img_size == (row.crop_size, row.crop_size)
    assert (backbone.type == 'DistilledVisionTransformer') == row.backbone.startswith('DeiT')
    assert head.type == {'linear': 'FCNHead', 'mask': 'OfficialInitSegmenterMaskHead'}[row.decoder]
    assert head.in_channels == backbone.embed_dims
    assert cfg.model.pretrained.endswith(row.pretrained_file)
    assert head.loss_decode.avg_non_ignore  # torch CE: mean over non-ignored pixels
    assert cfg.train_cfg.max_iters == 160000
    assert cfg.train_dataloader.batch_size == 8
    assert cfg.model.test_cfg.crop_size == (row.crop_size, row.crop_size)
    crops = [s['crop_size'] for s in cfg.train_dataloader.dataset.dataset.pipeline
             if s['type'] == 'RandomCrop']
    assert crops == [(row.crop_size, row.crop_size)]
    assert _config(row, 'full', tmp_path, gpus=4).train_dataloader.batch_size == 2
    model = MODELS.build(cfg.model)  # the real-size model builds (weights are not loaded here)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params > 5e6


@pytest.mark.parametrize('row', ROWS, ids=lambda r: r.id)
def test_smoke_profile_overrides_size_and_schedule_only(row, tmp_path):
    full, cfg = _config(row, 'full', tmp_path), _config(row, 'smoke', tmp_path)
    assert cfg.model.pretrained is None
    assert cfg.model.backbone.embed_dims == full.model.backbone.embed_dims // 8
    assert cfg.model.backbone.num_layers == full.model.backbone.num_layers // 6
    assert cfg.model.backbone.num_heads == full.model.backbone.num_heads
    assert cfg.model.decode_head.in_channels == cfg.model.backbone.embed_dims
    assert cfg.train_cfg.max_iters == SMOKE.max_iters
    assert cfg.train_dataloader.batch_size == 8  # the paper's batch
    # what the row is, and the recipe around it, is untouched
    for key in ('type', 'patch_size', 'drop_path_rate', 'patch_bias', 'interpolate_mode'):
        assert cfg.model.backbone[key] == full.model.backbone[key]
    assert cfg.model.decode_head.type == full.model.decode_head.type
    assert cfg.optim_wrapper.optimizer.type == full.optim_wrapper.optimizer.type
    assert cfg.optim_wrapper.optimizer.nesterov == full.optim_wrapper.optimizer.nesterov
    assert [s['type'] for s in cfg.train_dataloader.dataset.dataset.pipeline] == \
        [s['type'] for s in full.train_dataloader.dataset.dataset.pipeline]
    assert cfg.model.data_preprocessor.mean == full.model.data_preprocessor.mean

    model = MODELS.build(cfg.model)
    model.init_weights()
    model.eval()
    with torch.no_grad():
        logits = model(torch.rand(2, 3, SMOKE.crop, SMOKE.crop), mode='tensor')
    assert logits.shape == (2, 150, SMOKE.crop // row.patch_size, SMOKE.crop // row.patch_size)


@pytest.mark.parametrize('table', ['table3', 'table6'])
def test_base_configs_resolve_as_mmengine_resolves_them(table, monkeypatch):
    """The shortcut past mmengine's metafile search for ``mmseg::_base_/`` files composes the
    same config as mmengine's own search does."""
    from mmengine.config import Config
    from mmengine.config import config as config_module

    row = load_table(table).rows[0]
    shortcut = config_module._get_external_cfg_path
    assert shortcut.skips_bases
    fast = Config.fromfile(row.config_path).to_dict()
    monkeypatch.setattr(config_module, '_get_external_cfg_path', shortcut.__wrapped__)
    assert Config.fromfile(row.config_path).to_dict() == fast
    assert fast['model']['decode_head']['num_classes'] == 150  # mmseg's ADE20K bases arrived


def test_a_jobs_config_text_is_written_without_yapf_and_reads_back_the_same(tmp_path,
                                                                          monkeypatch):
    """A job prints and dumps its config, and puts it in every checkpoint: mmengine's own layout,
    no yapf pass, and the text is the same config."""
    from mmengine.config import Config
    from mmengine.config import config as config_module

    cfg = _config(load_table('table6').row('seg-b-mask-16'), 'full', tmp_path)

    def refuse(*args, **kwargs):
        raise AssertionError('yapf formatted a job config')

    monkeypatch.setattr(config_module, 'FormatCode', refuse)
    cfg.dump(tmp_path / 'dumped.py')
    assert (tmp_path / 'dumped.py').read_text() == cfg.pretty_text
    assert Config.fromfile(tmp_path / 'dumped.py').to_dict() == cfg.to_dict()
    assert copy.deepcopy(cfg).pretty_text == cfg.pretty_text  # the Runner's own copy


def test_whether_mmseg_is_installed_is_asked_once_a_process(tmp_path):
    """mmengine asks once per ``mmseg::`` base (reloading pkg_resources each time): the kept
    answer is mmengine's own."""
    from mmengine.config import config as config_module

    asked = config_module.is_installed
    _config(load_table('table3').row('seg-t-16'), 'full', tmp_path)
    misses = asked.cache_info().misses
    hits = asked.cache_info().hits
    _config(load_table('table6').row('seg-b-mask-16'), 'full', tmp_path)
    assert asked.cache_info().misses == misses and asked.cache_info().hits > hits
    assert asked('mmseg') is asked.__wrapped__('mmseg') is True


@pytest.mark.parametrize('profile', ['full', 'smoke'])
def test_shortened_schedule_ends_everything_at_max_iters(profile, tmp_path):
    """``max_iters`` ends training, the poly decay and the checkpoints there and keeps the
    profile's evaluation pattern; everything else is the row's config unchanged."""
    row = load_table('table6').row('seg-s-mask-16')
    whole = _config(row, profile, tmp_path)
    n = whole.train_cfg.val_interval + 3  # past the first evaluation, short of the end
    short = build_config(JobRequest(row=row, profile=profile, seed=0,
                                    work_dir=tmp_path / 'job', data_root=tmp_path / 'data',
                                    max_iters=n))
    assert short.train_cfg.max_iters == n and short.param_scheduler[0].end == n
    assert short.param_scheduler[0].begin == whole.param_scheduler[0].begin
    assert short.default_hooks.checkpoint.interval == min(
        whole.default_hooks.checkpoint.interval, n)
    assert short.train_cfg.val_interval == whole.train_cfg.val_interval
    for (start, interval), (_, was) in zip(short.train_cfg.get('dynamic_intervals', []),
                                           whole.train_cfg.get('dynamic_intervals', [])):
        assert interval == min(was, n + 1)  # after the switch, the next evaluation is the last
    changed = {key for key in whole.to_dict() if whole[key] != short[key]}
    hooks = {'default_hooks'} if whole.default_hooks.checkpoint.interval > n else set()
    assert changed == {'train_cfg', 'param_scheduler'} | hooks
    with pytest.raises(ValueError, match='max_iters must be at least 1'):
        JobRequest(row=row, profile=profile, seed=0, work_dir=None, data_root=None,
                   max_iters=0)
