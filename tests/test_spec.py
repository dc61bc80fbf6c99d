import re

import pytest
import yaml

from harness.core.errors import SpecError
from harness.core.spec import EXPERIMENTS, available_tables, load_table
from tests.helpers import broken_spec, harness_cli


def test_tables_hold_the_paper_rows():
    table3, table6 = load_table('table3'), load_table('table6')
    assert [r.model for r in table3.rows] == [
        'Seg-T/16', 'Seg-S/32', 'Seg-S/16', 'Seg-B†/16', 'Seg-B/32', 'Seg-B/16', 'Seg-B/8',
        'Seg-L/16']
    assert {r.decoder for r in table3.rows} == {'linear'}
    assert [r.model for r in table6.rows] == [
        'Seg-T-Mask/16', 'Seg-S-Mask/16', 'Seg-B-Mask/16', 'Seg-B†-Mask/16', 'Seg-L-Mask/16']
    assert {r.decoder for r in table6.rows} == {'mask'}
    assert table6.row('seg-l-mask-16').crop_size == 640


def test_known_values_carry_source_and_confidence_unknown_stay_null():
    for name in ('table3', 'table6'):
        for row in load_table(name).rows:
            for value in row.paper.values():
                known = value.miou is not None
                assert known == (value.source is not None) == (value.confidence is not None)
    # the two values read in the seed README (v1 numbering) and the author's statement
    assert load_table('table3').row('seg-bd-16').paper['v1'].confidence == 'read'
    assert load_table('table6').row('seg-l-mask-16').paper['v1'].miou == 48.8
    assert load_table('table3').row('seg-t-16').paper['v1'].miou is None


@pytest.mark.parametrize('mutate, field', [
    (lambda rows: rows[2]['paper']['v3'].update(miou='high'), 'paper.v3.miou'),
    (lambda rows: rows[2]['paper']['v3'].update(source=None), 'paper.v3.miou'),
    (lambda rows: rows[2]['paper']['v1'].update(miou=47.0), 'paper.v1.miou'),
    (lambda rows: rows[2].update(decoder='conv'), 'decoder'),
    (lambda rows: rows[2].pop('patch_size'), 'patch_size'),
    (lambda rows: rows[2].update(patch_size=True), 'patch_size'),
    (lambda rows: rows[2].update(config='experiments/configs/nope.py'), 'config'),
    (lambda rows: rows[2]['paper']['v3'].update(confidence='guess'), 'paper.v3.confidence'),
    (lambda rows: rows[2]['references'].update(paperswithcode={'miou': 1, 'source': 'x'}),
     'references.paperswithcode'),
    (lambda rows: rows[2].update(id='seg-t-16'), 'id'),
    (lambda rows: rows[2]['pretrained'].update(sha256='d0272ac0'), 'pretrained.sha256'),
    (lambda rows: rows[2]['pretrained'].update(url='ftp://example.org/vit.pth'), 'pretrained.url'),
    (lambda rows: rows[2].update(speed={'seconds_per_iter': 0, 'gpus': 1, 'gpu': 'V100',
                                        'source': 'x'}), 'speed.seconds_per_iter'),
    (lambda rows: rows[2].update(speed={'seconds_per_iter': 0.5, 'gpus': 1}), 'speed.gpu'),
])
def test_malformed_spec_names_file_row_and_field(tmp_path, mutate, field):
    path = broken_spec(tmp_path, mutate)
    with pytest.raises(SpecError) as err:
        load_table(path)
    message = str(err.value)
    assert '\n' not in message
    assert str(path) in message
    assert re.search(r"row '(seg-s-16|seg-t-16)'", message), message
    assert f"field '{field}'" in message


@pytest.mark.parametrize('args, needle', [
    (('status', '--table', 'table9'), "unknown table 'table9'"),
    (('status', '--table', 'table3', '--rows', 'seg-x-16'), "no row 'seg-x-16'"),
    (('run', '--table', 'table3', '--seeds', '0'), '--seeds must be at least 1'),
])
def test_cli_bad_input_is_one_line_and_exit_2(args, needle):
    result = harness_cli(*args)
    assert result.returncode == 2
    assert result.stderr.strip().count('\n') == 0
    assert needle in result.stderr


def test_full_run_stops_before_training_without_data_or_weights(tmp_path, synthetic_root):
    work = tmp_path / 'work'
    no_data = harness_cli('run', '--table', 'table3', '--profile', 'full', '--work-root', work,
                          '--data-root', tmp_path / 'missing', '--weights-root', tmp_path)
    assert no_data.returncode == 2
    assert no_data.stderr.startswith('error: ADE20K not found') and \
        no_data.stderr.count('\n') == 1
    # the synthetic copy has the ADE20K layout, so the next thing missing is the weights
    no_weights = harness_cli('run', '--table', 'table6', '--rows', 'seg-bd-mask-16',
                             '--profile', 'full', '--work-root', work,
                             '--data-root', synthetic_root, '--weights-root', tmp_path)
    assert no_weights.returncode == 2 and no_weights.stderr.count('\n') == 1
    assert 'pretrained weights missing: weights/deit_base_distilled_p16_384.pth' in \
        no_weights.stderr
    assert not work.exists()  # nothing started


@pytest.mark.parametrize('bad_id', ['seg/t-16', 'seg t 16', '-seg-t-16', 'seg-t,16', 'seg:t',
                                    '../seg', 'seg-t-16é', 'x' * 65, ''])
def test_row_ids_must_be_usable_as_folder_wandb_and_shell_names(tmp_path, bad_id):
    path = broken_spec(tmp_path, lambda rows: rows[2].update(id=bad_id))
    with pytest.raises(SpecError) as err:
        load_table(path)
    message = str(err.value)
    assert '\n' not in message and str(path) in message
    assert f"field 'id': {bad_id!r} is not a usable identifier" in message


def _refused(tmp_path, mutate):
    """(path, message) of table3.yaml with ``mutate`` applied to the whole spec, which must
    not load."""
    data = yaml.safe_load((EXPERIMENTS / 'table3.yaml').read_text())
    mutate(data)
    path = tmp_path / 'table3.yaml'
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    with pytest.raises(SpecError) as err:
        load_table(path)
    return path, str(err.value)


@pytest.mark.parametrize('mutate, field, value', [
    (lambda data: data.update(table='table 3'), 'table', 'table 3'),
    (lambda data: data['rows'][2]['pretrained'].update(file='/etc/vit.pth'), 'pretrained.file',
     '/etc/vit.pth'),
    (lambda data: data['rows'][2]['pretrained'].update(file='weights/../../vit.pth'),
     'pretrained.file', 'weights/../../vit.pth'),
    (lambda data: data['rows'][2]['pretrained'].update(id='timm/vit small'), 'pretrained.id',
     'timm/vit small'),
    (lambda data: data['rows'][2].update(seed_curves='seg s 16'), 'seed_curves', 'seg s 16'),
])
def test_names_that_become_paths_are_checked_on_load(tmp_path, mutate, field, value):
    path, message = _refused(tmp_path, mutate)
    assert '\n' not in message and str(path) in message
    assert f"field '{field}': {value!r}" in message
    if field != 'table':
        assert "row 'seg-s-16'" in message


def test_display_names_keep_unicode(tmp_path):
    title, model = 'Tabelle 3 — lineärer Dekoder ✓', 'Seg-B†/16 (蒸留)'
    data = yaml.safe_load((EXPERIMENTS / 'table3.yaml').read_text())
    data['title'] = title
    data['rows'][3]['model'] = model
    path = tmp_path / 'table3.yaml'
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding='utf-8')
    table = load_table(path)
    assert table.title == title and table.rows[3].model == model


@pytest.mark.parametrize('mutate, field, suggestion', [
    (lambda data: data.update(titel='x'), 'titel', 'title'),
    (lambda data: data['rows'][2].update(crop=512), 'crop', 'crop_size'),
    (lambda data: data['rows'][2]['pretrained'].update(sha_256='0' * 64), 'pretrained.sha_256',
     'sha256'),
    (lambda data: data['rows'][2].update(speed={'seconds_per_iter': 0.5, 'gpus': 1,
                                                'gpu': 'V100', 'source': 'x', 'gpu_s': 2}),
     'speed.gpu_s', 'gpus'),
    (lambda data: data['rows'][2]['paper'].update(V3=data['rows'][2]['paper']['v1']),
     'paper.V3', 'v3'),
    (lambda data: data['rows'][2]['paper']['v3'].update(mIoU=47.0), 'paper.v3.mIoU', 'miou'),
    (lambda data: data['rows'][2]['matches'].update(reasons='x'), 'matches.reasons', 'reason'),
    (lambda data: data['rows'][2]['references'].update(seed_rep={'miou': 1, 'source': 'x'}),
     'references.seed_rep', 'seed_repo'),
    (lambda data: data['rows'][2]['references'].update(
        official_zoo={'miou': 1, 'source': 'x', 'sorce': 'y'}), 'references.official_zoo.sorce',
     'source'),
])
def test_unknown_keys_are_refused_with_the_closest_known_one(tmp_path, mutate, field,
                                                             suggestion):
    """A key nothing reads (a typo of a known one) stops the load at every level of the spec,
    where it would otherwise be ignored (``pretrained.sha_256``: the weights never checked)."""
    path, message = _refused(tmp_path, mutate)
    assert '\n' not in message and message.startswith(f'{path}: ')
    assert f"field '{field}': unknown key, did you mean '{suggestion}'?" in message, message
    assert ("row 'seg-s-16'" in message) == (field != 'titel')


def test_every_committed_spec_loads():
    """Every spec in experiments/ holds only known keys (and passes every other check)."""
    for name in available_tables():
        assert load_table(name).rows, name
