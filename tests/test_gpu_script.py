"""scripts/gpu_check.sh before it meets a GPU: its own wiring (stage order, each stage's flags
through the real parsers, results copied to $OUT, failed stages counted, reports/ untouched),
in seconds, with a stand-in for each stage's work (tests/test_rehearse.py and
tests/test_bench.py run that work); and `make install` builds mmcv's CPU ops whatever the
machine has."""
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / 'scripts' / 'gpu_check.sh'
STAND_IN = REPO / 'tests' / 'gpu_check_stand_in.py'
# what a caller's shell may carry that would steer the script or the Makefile elsewhere
STEERING = ('PY', 'USE_ENV', 'OUT', 'MMCV_CUDA_OPS', 'FORCE_CUDA', 'CUDA_VISIBLE_DEVICES',
            'MAKEFLAGS', 'MFLAGS', 'MAKELEVEL', 'MAKEOVERRIDES')  # a calling make's too


def clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in STEERING}
    return {**env, **extra}


def script_stages(text: str) -> list[str]:
    """The `== <stage>` names the real run prints, in order, read from the script's `stage`
    calls; a stage named after a function's `$1` stands for each top-level call of it."""
    stages, function = [], None
    for line in text.splitlines():
        if m := re.match(r'(\w+)\(\)\s*\{', line):
            function = m.group(1)
        elif line.startswith('}'):
            function = None
        elif m := re.match(r'\s*stage\s+(.+)$', line):
            words = shlex.split(m.group(1))
            assert len(words) == 1, line
            # a note the dry run adds (a variable after the name) is not part of the name
            name = re.sub(r'\$\{?(?!1\b)\w+\}?', '', words[0])
            if '$1' in name:
                calls = re.findall(rf'^(?:\w+=\S*\s+)*{function}\s+(\S+)', text, re.M)
                stages += [name.replace('$1', call) for call in calls]
            else:
                stages.append(name)
    return stages


def test_script_stages_are_read_from_the_script():
    """Else the dry run's test would check nothing."""
    stages = script_stages(SCRIPT.read_text())
    assert stages[0] == 'setup' and stages[-1] == 'done' and len(stages) >= 4, stages
    assert len(set(stages)) == len(stages) and not any('$' in s for s in stages), stages


def _dry_run(tmp_path, **env):
    """The dry run with the stand-in for `python -m harness` (tests/gpu_check_stand_in.py):
    (the finished process, its files' folder); the committed reports checked untouched."""
    committed = {p: hashlib.sha256(p.read_bytes()).hexdigest()
                 for p in (REPO / 'reports').glob('*/*') if p.is_file()}
    out = tmp_path / 'dry'
    proc = subprocess.run(['bash', str(SCRIPT), '--dry-run', str(out)], cwd=tmp_path,
                          env=clean_env(PY=sys.executable, HARNESS_STAND_IN=str(STAND_IN),
                                        **env), capture_output=True, text=True, timeout=300)
    assert committed == {p: hashlib.sha256(p.read_bytes()).hexdigest()
                         for p in (REPO / 'reports').glob('*/*') if p.is_file()}
    return proc, out


def _stage_lines(stdout: str) -> list[int]:
    """Where each stage of the real run starts in the dry run's output, in the script's order."""
    lines = stdout.splitlines()
    at = []
    for stage in script_stages(SCRIPT.read_text()):
        found = [k for k, line in enumerate(lines) if re.match(rf'== {re.escape(stage)}( |$)',
                                                                line)]
        assert found, f'no "== {stage}" line in the dry run:\n{stdout[-3000:]}'
        at.append(found[0])
    return at


def _calls(folder, name) -> list[str]:
    """The stage command lines that wrote ``folder/<name>.json``, in order."""
    return json.loads((folder / f'{name}.json').read_text())['cpu']


def test_dry_run_runs_every_stage_in_order_and_copies_the_results(tmp_path):
    """The script's own wiring: each stage's flags pass the real parsers, the stages run in the
    real run's order into the dry run's folders, their results end up in $OUT, and nothing is
    written into the committed reports/."""
    proc, out = _dry_run(tmp_path)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0 and 'dry run: passed' in proc.stdout, log[-4000:]
    at = _stage_lines(proc.stdout)
    assert at == sorted(at), 'stages out of the real run\'s order'
    assert re.search(r'^== rehearsal tf32 \(dry run: .*GPU', proc.stdout, re.M)
    assert not re.search(r'^(rehearsal \w+|bench): exit', proc.stdout, re.M), log[-4000:]
    fp32, bf16, tf32 = _calls(out / 'rehearsal', 'rehearsal')  # three stages, one folder
    assert '--amp' not in fp32 and '--no-resume' not in fp32  # fp32 resumes from its checkpoint
    assert '--amp bf16 --no-resume' in bf16 and tf32.endswith('--no-resume')
    assert all('--device cpu' in call for call in (fp32, bf16, tf32))
    [bench] = _calls(out / 'bench', 'bench')
    assert '--device cpu --amp bf16 --tf32' in bench
    for name, folder in (('rehearsal', 'rehearsal'), ('bench', 'bench')):
        for suffix in ('.json', '.md'):  # the last stage's files, copied
            assert (out / 'out' / f'{name}{suffix}').read_bytes() == \
                (out / folder / f'{name}{suffix}').read_bytes()


def test_a_failed_stage_is_counted_and_the_next_ones_still_run(tmp_path):
    proc, out = _dry_run(tmp_path, STAND_IN_FAILS='--amp bf16 --no-resume')
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert 'rehearsal bf16: exit 3 (rows on record kept)' in proc.stdout
    assert 'bench: exit' not in proc.stdout
    assert proc.stderr.splitlines()[-1] == 'dry run: failed: rehearsal bf16'
    at = _stage_lines(proc.stdout)
    assert at == sorted(at)  # the later stages ran
    assert len(_calls(out / 'rehearsal', 'rehearsal')) == 2  # fp32 and tf32
    assert _calls(out / 'out', 'bench') == _calls(out / 'bench', 'bench')


def mmcv_build_env(*make_args: str) -> dict:
    """The environment assignments in front of the mmcv build of `make install`'s recipe, as
    `make -n` prints it (-B: also where .venv is built already)."""
    proc = subprocess.run(['make', '-n', '-B', 'install', *make_args], cwd=REPO,
                          env=clean_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    commands = proc.stdout.replace('\\\n', ' ').splitlines()
    builds = [c for c in commands if not c.startswith('#')
              and any(w.startswith('mmcv==') for w in shlex.split(c))]
    assert len(builds) == 1, proc.stdout
    env = {}
    for word in shlex.split(builds[0]):
        if not re.match(r'\w+=', word):
            break
        name, value = word.split('=', 1)
        env[name] = value
    return env


def mmcv_builds_cuda_ops(env: dict) -> bool:
    """mmcv 2.1.0's setup.py on a machine whose torch sees a GPU: its ops at all unless
    MMCV_WITH_OPS=0; the CUDA kernels when torch.cuda.is_available() (false once
    CUDA_VISIBLE_DEVICES is empty) or FORCE_CUDA=1."""
    assert env.get('MMCV_WITH_OPS', '1') != '0', 'no ops at all: mmseg fails to import'
    return env.get('CUDA_VISIBLE_DEVICES') != '' or env.get('FORCE_CUDA', '0') == '1'


def test_install_builds_mmcv_cpu_ops_with_cuda_hidden():
    env = mmcv_build_env()
    assert env.get('CUDA_VISIBLE_DEVICES') == '' and env.get('FORCE_CUDA') != '1', env
    assert not mmcv_builds_cuda_ops(env)
    # a FORCE_CUDA=1 left in the caller's shell (earlier docs asked for it) is overridden
    assert env.get('FORCE_CUDA') == '0'


def test_install_builds_mmcv_cuda_ops_when_asked():
    env = mmcv_build_env('MMCV_CUDA_OPS=1')
    assert env.get('FORCE_CUDA') == '1' and 'CUDA_VISIBLE_DEVICES' not in env, env
    assert mmcv_builds_cuda_ops(env)
