"""The pieces of a job's record that need no job: the recipe fingerprint (what it keeps and
what it leaves out), the recipe sources, and what changed between a job's starts."""
import dataclasses

import pytest

from harness.core.request import JobRequest
from harness.core.sources import recipe_sources
from harness.core.spec import load_table
from harness.launch.provenance import changes_during
from harness.prepare.fingerprint import differences, fingerprint, recipe_view
from harness.prepare.job_config import build_config

ROW = load_table('table3').row('seg-b-16')


def _view(tmp_path, **fields):
    request = JobRequest(**{'row': ROW, 'profile': 'full', 'seed': 0,
                            'work_dir': tmp_path / 'job', 'data_root': tmp_path / 'data',
                            'weights_root': tmp_path} | fields)
    return recipe_view(build_config(request), request.weights_root, request.gpus)


@pytest.fixture(scope='module')
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp('base')
    return root, _view(root)


def test_the_fingerprint_leaves_out_what_does_not_change_results(base):
    tmp_path, base = base
    same = _view(tmp_path, work_dir=tmp_path / 'elsewhere', data_root=tmp_path / 'd2',
                 wandb_run_id='r', wandb_project='p', workers=1, gpus=2,
                 weights_root=tmp_path / 'w2')
    assert fingerprint(same) == fingerprint(base) and differences(base, same) == []
    assert base['model']['pretrained'] == ROW.pretrained_file  # as the spec names it


@pytest.mark.parametrize('fields, key', [
    (dict(seed=1), 'randomness.seed'),
    (dict(amp='bf16'), 'optim_wrapper.type'),
    (dict(max_iters=50), 'train_cfg.max_iters'),
    (dict(batch=2), 'train_dataloader.batch_size'),
])
def test_the_fingerprint_follows_what_changes_results(base, fields, key):
    tmp_path, base = base
    other = _view(tmp_path, **fields)
    assert fingerprint(other) != fingerprint(base)
    assert key in differences(base, other)


def test_recipe_sources_follow_the_config_not_its_comments_nor_paper_values(tmp_path):
    config = tmp_path / 'seg-b-16.py'
    text = ROW.config_path.read_text()
    config.write_text(text)
    row = dataclasses.replace(ROW, config=str(config))
    before = recipe_sources(row)
    config.write_text('# a comment changes no recipe\n' + text)
    assert recipe_sources(row) == before
    assert recipe_sources(dataclasses.replace(row, paper={}, references={})) == before
    config.write_text(text + '\nmodel = dict(backbone=dict(drop_path_rate=0.2))\n')
    assert recipe_sources(row) != before


def test_what_changed_between_starts_names_the_start_and_the_change():
    start = {'git': {'commit': 'a' * 40, 'dirty': False, 'diff_sha256': None},
             'versions': {'torch': '2.13.0', 'mmseg': '1.2.2'}}
    dirty = {'git': {'commit': 'a' * 40, 'dirty': True, 'diff_sha256': 'f' * 64},
             'versions': {'torch': '2.13.0', 'mmseg': '1.2.2'}}
    upgraded = {'git': dirty['git'], 'versions': {'torch': '2.14.1', 'mmseg': '1.2.2'}}
    assert changes_during([start, start]) == []
    assert changes_during([start, dirty, upgraded]) == [
        f"start 2: code {'a' * 10} (uncommitted changes)",
        'start 3: packages torch 2.13.0 -> 2.14.1']
