"""`harness weights`: a release in the real timm layout (random values), served over HTTP from
127.0.0.1, is downloaded, verified, converted and loads into the row's model with no missing key;
a wrong hash, an unreachable server and a local file behave as documented."""
import functools
import hashlib
import http.server
import re
import socket
import threading
import urllib.parse
from pathlib import Path

import pytest
import torch
import yaml
from mmseg.registry import MODELS
from mmseg.utils import register_all_modules

from harness.core.request import JobRequest
from harness.core.spec import EXPERIMENTS, load_table
from harness.prepare.job_config import build_config
from tests.helpers import encoder_shapes, harness_cli, random_state

ROW = load_table('table3').row('seg-t-16')  # ViT-Ti/16: the smallest real release


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope='module')
def release(tmp_path_factory):
    """(server base URL, release bytes): a ViT-Ti/16 384 release at the path of the spec URL."""
    root = tmp_path_factory.mktemp('hub')
    state = random_state(encoder_shapes(d=192, layers=12, patch=16, distilled=False),
                         torch.Generator().manual_seed(3))
    path = root / urllib.parse.urlsplit(ROW.pretrained_url).path.lstrip('/')
    path.parent.mkdir(parents=True)
    torch.save(state, path)  # a hub pytorch_model.bin is a plain state dict
    server = http.server.ThreadingHTTPServer(
        ('127.0.0.1', 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f'http://127.0.0.1:{server.server_address[1]}', path.read_bytes()
    server.shutdown()
    server.server_close()


def _spec_with(tmp_path, base, sha256):
    """table3.yaml with seg-t-16's release on the local server and the given hash."""
    data = yaml.safe_load((EXPERIMENTS / 'table3.yaml').read_text())
    row = next(r for r in data['rows'] if r['id'] == ROW.id)
    row['pretrained'].update(url=base + urllib.parse.urlsplit(ROW.pretrained_url).path,
                             sha256=sha256)
    path = tmp_path / 'table3.yaml'
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def _files(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*'))
            if p.is_file()}


def _assert_loads_into_row_model(weights_root):
    register_all_modules()
    converted = torch.load(weights_root / ROW.pretrained_file, weights_only=True)
    cfg = build_config(JobRequest(row=ROW, profile='full', seed=0, work_dir=weights_root,
                                  data_root=weights_root, weights_root=weights_root))
    model = MODELS.build(cfg.model)
    model.init_weights()  # mmseg loads model.pretrained through the backbone's init_cfg
    state = model.backbone.state_dict()
    assert state.keys() == converted.keys()  # zero missing, zero unexpected
    for key, value in converted.items():
        if key != 'pos_embed':  # resized from the 24x24 grid to 32x32
            assert torch.equal(state[key], value), key
    assert state['pos_embed'].shape == (1, 1 + 32 * 32, 192)


def test_download_converts_and_loads_into_the_row_model(tmp_path, release):
    base, blob = release
    result = harness_cli('weights', '--table', 'table3', '--rows', ROW.id, '--weights-root',
                         tmp_path, '--url-base', base)
    assert result.returncode == 0, result.stderr
    # the spec records no hash for the real release: the computed one is printed, unverified
    assert hashlib.sha256(blob).hexdigest() in result.stdout
    assert 'NOT verified' in result.stdout
    # rich's transfer display: bytes of the total (decimal units, as rich prints them), speed
    unit, suffix = next((1000 ** k, s) for k, s in enumerate(['bytes', 'kB', 'MB', 'GB'])
                        if len(blob) < 1000 ** (k + 1))
    size = f'{len(blob) / unit:,.{0 if unit == 1 else 1}f}'
    shown = re.search(r'^vit_tiny_patch16_384\S*\.bin .*?(\S+)/(\S+) (\S+) +[\d.]+ (\S+)/s',
                      result.stdout, re.M)
    assert shown and shown.groups()[:3] == (size, size, suffix), result.stdout
    assert sorted(_files(tmp_path)) == [
        'weights/original/vit_tiny_patch16_384.augreg_in21k_ft_in1k.bin',
        'weights/vit_tiny_p16_384.pth']  # nothing partial
    _assert_loads_into_row_model(tmp_path)
    before = _files(tmp_path)
    again = harness_cli('weights', '--table', 'table3', '--rows', ROW.id, '--weights-root',
                        tmp_path, '--url-base', 'http://127.0.0.1:9')
    assert again.returncode == 0 and 'present, kept' in again.stdout
    assert _files(tmp_path) == before


def test_recorded_hash_is_verified(tmp_path, release):
    base, blob = release
    spec = _spec_with(tmp_path, base, hashlib.sha256(blob).hexdigest())
    result = harness_cli('weights', '--table', spec, '--rows', ROW.id,
                         '--weights-root', tmp_path / 'root')
    assert result.returncode == 0, result.stderr
    assert '(verified)' in result.stdout
    assert (tmp_path / 'root' / ROW.pretrained_file).is_file()


def test_checksum_mismatch_is_one_line_and_writes_nothing(tmp_path, release):
    base, blob = release
    wrong = hashlib.sha256(blob + b'x').hexdigest()
    spec = _spec_with(tmp_path, base, wrong)
    root = tmp_path / 'root'
    other = root / 'weights' / 'vit_small_p16_384.pth'  # another row's weights, already there
    other.parent.mkdir(parents=True)
    other.write_bytes(b'converted before')
    before = _files(root)
    result = harness_cli('weights', '--table', spec, '--rows', ROW.id, '--weights-root', root)
    assert result.returncode != 0
    assert result.stderr.startswith('error: ') and result.stderr.count('\n') == 1
    assert 'sha256 mismatch' in result.stderr and wrong in result.stderr
    assert 'vit_tiny_patch16_384.augreg_in21k_ft_in1k.bin' in result.stderr  # where to put it
    assert _files(root) == before  # no partial download, no converted file, the other intact


def test_unreachable_server_is_one_line_and_writes_nothing(tmp_path):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    result = harness_cli('weights', '--table', 'table3', '--rows', ROW.id, '--weights-root',
                         tmp_path, '--url-base', f'http://127.0.0.1:{port}', '--timeout', '5')
    assert result.returncode != 0
    assert result.stderr.startswith('error: ') and result.stderr.count('\n') == 1
    assert f'127.0.0.1:{port}' in result.stderr and 'expected sha256 unknown' in result.stderr
    assert 'weights/original/vit_tiny_patch16_384.augreg_in21k_ft_in1k.bin' in result.stderr
    assert _files(tmp_path) == {}


def test_local_release_file_and_originals_folder(tmp_path, release):
    _, blob = release
    local = tmp_path / 'downloads' / 'my-vit-ti.bin'
    local.parent.mkdir()
    local.write_bytes(blob)
    result = harness_cli('weights', '--table', 'table3', '--rows', ROW.id, '--weights-root',
                         tmp_path / 'a', '--from', local)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / 'a' / ROW.pretrained_file).is_file() and local.read_bytes() == blob
    # a folder of releases downloaded by hand, under their release names (make weights
    # WEIGHTS_DIR=...): no network needed
    originals = tmp_path / 'originals'
    originals.mkdir()
    (originals / 'vit_tiny_patch16_384.augreg_in21k_ft_in1k.bin').write_bytes(blob)
    result = harness_cli('weights', '--table', 'table3', '--rows', ROW.id, '--weights-root',
                         tmp_path / 'b', '--originals', originals, '--url-base',
                         'http://127.0.0.1:9')
    assert result.returncode == 0, result.stderr
    assert (tmp_path / 'b' / ROW.pretrained_file).read_bytes() == \
        (tmp_path / 'a' / ROW.pretrained_file).read_bytes()


def test_a_release_of_another_backbone_is_refused(tmp_path):
    small = random_state(encoder_shapes(d=64, layers=2, patch=16, distilled=False),
                         torch.Generator().manual_seed(4))
    source = tmp_path / 'small.pth'
    torch.save(small, source)
    result = harness_cli('weights', '--table', 'table3', '--rows', ROW.id, '--weights-root',
                         tmp_path / 'root', '--from', source)
    assert result.returncode != 0 and 'not a ViT-Ti/16 release' in result.stderr
    assert not (tmp_path / 'root').exists()


def test_row_without_public_release_says_it_needs_a_user_file(tmp_path):
    result = harness_cli('weights', '--table', 'table3', '--rows', 'seg-b-8', '--weights-root',
                         tmp_path)
    assert result.returncode != 0 and result.stderr.count('\n') == 1
    assert 'needs a user-supplied file' in result.stderr and '--from FILE' in result.stderr


def test_readme_table_lists_every_row_with_its_spec_values():
    readme = (Path(__file__).resolve().parents[1] / 'README.md').read_text()
    for name in ('table3', 'table6'):
        for row in load_table(name).rows:
            line = next((line for line in readme.splitlines()
                         if line.startswith(f'| {row.model} (`{row.id}`) |')), None)
            assert line, row.id
            assert f'`{row.config}`' in line
            assert (row.pretrained_url or 'none public') in line
            assert (row.pretrained_sha256 or 'unknown') in line
            released = 'official_zoo' in row.references
            assert (f'make evaluate-{name} ROWS={row.id}' in line) == released
