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
    config = tmp_path / 'seg-b-16.py'  # the row's config through a file the test may edit
    text = f'_base_ = [{str(ROW.config_path)!r}]\n'
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


def test_the_seed_free_fingerprint_leaves_out_the_seed_alone(base):
    from harness.core.result import seed_free_fingerprint
    tmp_path, base = base
    other_seed = _view(tmp_path, seed=3)
    assert seed_free_fingerprint(other_seed) == seed_free_fingerprint(base)
    assert fingerprint(other_seed) != fingerprint(base)
    assert seed_free_fingerprint(_view(tmp_path, seed=3, amp='bf16')) != \
        seed_free_fingerprint(base)


def test_stripped_source_drops_comments_and_docstrings_not_code(tmp_path):
    from harness.core.errors import SpecError
    from harness.core.sources import stripped_source
    path = tmp_path / 'm.py'
    code = 'x = 1\n\n\ndef f(a):\n    return a + x\n'
    path.write_text(code)
    bare = stripped_source(path)
    path.write_text('"""Module doc."""\n# comment\nx = 1  # why\n\n\ndef f(a):\n'
                    '    """Doc\n\n    of f."""\n    return a + x  # because\n')
    assert stripped_source(path) == bare
    path.write_text('s = "# not a comment"\n')
    assert '# not a comment' in stripped_source(path)
    path.write_text(code.replace('a + x', 'a - x'))
    assert stripped_source(path) != bare
    path.write_text(code + 'y = (\n')
    with pytest.raises(SpecError, match=r'm\.py does not parse \(line \d+'):
        stripped_source(path)


def test_every_module_of_the_runtime_packages_says_whether_it_decides_numbers():
    from harness.core.layout import REPO_ROOT
    from harness.core.sources import NOT_NUMBER_CODE, module_files, number_code_files
    deciding, not_deciding = set(number_code_files()), set(module_files(NOT_NUMBER_CODE))
    assert len(not_deciding) == len(NOT_NUMBER_CODE)  # every name is a module
    modules = {p for package in ('models', 'prepare', 'runtime')
               for p in (REPO_ROOT / 'harness' / package).glob('*.py')}
    assert modules - deciding - not_deciding == set(), 'classify them in harness/core/sources.py'
    assert not deciding & not_deciding


def test_the_code_identity_follows_code_and_packages_not_comments(tmp_path):
    from harness.core.sources import code_differences, code_identity
    config = tmp_path / 'seg-b-16.py'
    config.write_text(f'_base_ = [{str(ROW.config_path)!r}]\n')
    row = dataclasses.replace(ROW, config=str(config))
    versions = {'torch': '2.13.0', 'mmcv': '2.1.0', 'mmengine': '0.10.7',
                'mmsegmentation': '1.2.2', 'numpy': '2.0'}
    before = code_identity(row, versions)
    assert code_identity(row, {**versions, 'numpy': '2.1'}) == before
    config.write_text('# why\n' + config.read_text())
    assert code_identity(row, versions) == before
    config.write_text(config.read_text() + 'crop_size = (512, 512)\n')
    after = code_identity(row, {**versions, 'torch': '2.14.1'})
    assert code_differences(before, after) == ['seg-b-16.py', 'torch 2.13.0 -> 2.14.1']


def test_packages_off_the_pins_are_named():
    from harness.core.sources import off_pins, pinned_versions
    pins = pinned_versions()
    assert pins['torch'] and pins['mmsegmentation'] and 'wandb' not in pins  # a range
    ran = {'torch': pins['torch'] + '+cpu', 'mmengine': pins['mmengine'],
           'mmsegmentation': '1.0.0', 'mmcv': '2.1.0'}
    assert off_pins(ran) == [f"mmsegmentation 1.0.0 (pinned {pins['mmsegmentation']})"]
