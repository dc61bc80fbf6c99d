"""The command line: options dataclasses that check themselves (one line naming the flag), the
row selection, and the generated reference in docs/ that must equal what the parsers say."""
import dataclasses
import subprocess
import sys

import pytest

from harness.cli import COMMANDS, build_parser
from harness.cli.options import OptionError, flag_of
from harness.cli.reference import REFERENCE, render
from harness.cli.rehearse import RehearseOptions
from harness.cli.run import RunOptions
from tests.helpers import REPO_ROOT, broken_spec, harness_cli


def test_the_cli_reference_is_what_the_parsers_print():
    assert REFERENCE.read_text() == render(), \
        'docs/cli.md is out of date: run `python -m harness.cli.reference`'
    check = subprocess.run([sys.executable, '-m', 'harness.cli.reference', '--check'],
                           cwd=REPO_ROOT, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_the_reference_lists_every_command_and_every_flag():
    text = render()
    for command in COMMANDS:
        assert f'\n## {command.name}\n' in text, command.name
        for field in dataclasses.fields(command.options):
            if 'help' in field.metadata and not field.metadata['positional']:
                assert flag_of(field) in text.split(f'\n## {command.name}\n')[1], \
                    (command.name, field.name)


def test_every_command_has_a_module():
    names = [c.name for c in COMMANDS]
    assert names == ['run', 'evaluate', 'report', 'status', 'plan', 'weights', 'check-data',
                     'rehearse', 'bench', 'convert-official', 'convert-pretrained', 'sync-help',
                     'verify', 'record']
    for command in COMMANDS:
        module = command.options.__module__
        assert module.startswith('harness.cli.'), module
    assert len({c.run.__module__ for c in COMMANDS}) == len(COMMANDS)


@pytest.mark.parametrize('fields, message', [
    (dict(seeds=0), '--seeds must be at least 1, got 0'),
    (dict(amp='int8'), "unknown --amp 'int8' (choose bf16, fp16 or tf32)"),
    (dict(launcher='k8s'), "unknown --launcher 'k8s' (choose local, torchrun or slurm)"),
    (dict(gpus=3, launcher='torchrun'),
     '3 processes (--gpus x --nodes) do not divide the total batch 8'),
    (dict(gpus=2), '--gpus 2 needs --launcher torchrun or slurm'),
    (dict(nodes=2), '--nodes needs --launcher slurm'),
    (dict(mem='12X'), "--mem '12X' is not a SLURM memory size"),
    (dict(poll_interval=0.0), '--poll-interval must be a positive number of seconds'),
    (dict(time='1:2:3:4'), "--time '1:2:3:4' is not a SLURM time (MM, HH:MM:SS, D-HH)"),
    (dict(max_iters=0), '--max-iters must be at least 1, got 0'),
    (dict(workers=-1), '--workers must be at least 0, got -1'),
])
def test_run_options_check_themselves_when_built(fields, message):
    with pytest.raises(OptionError) as refused:
        RunOptions(table=['table3'], **fields)
    assert str(refused.value).startswith(message) and '\n' not in str(refused.value)


def test_the_slurm_flags_are_the_launch_layers_fields():
    """Declared once, in launch/: the flags of run and evaluate are the very fields that
    SlurmOptions hands to the submission."""
    from harness.launch.slurm_options import SlurmOptions, SlurmRequest
    run = RunOptions.__dataclass_fields__
    for field in dataclasses.fields(SlurmRequest):
        assert run[field.name].metadata is field.metadata, field.name
        assert SlurmOptions.__dataclass_fields__[field.name].metadata is field.metadata
    assert {f.name for f in dataclasses.fields(SlurmOptions)} - set(run) == {
        'tasks_per_node', 'gpus_per_node'}  # from --gpus and the profile


def test_the_gpu_only_precisions_are_refused_by_one_check_in_run_and_rehearse():
    run = pytest.raises(OptionError, RunOptions, table=['table3'], amp='fp16')
    rehearse = pytest.raises(OptionError, RehearseOptions, table=['table3'], amp='fp16')
    assert str(run.value) == str(rehearse.value)
    assert str(run.value).startswith('--amp fp16 needs a GPU')
    RehearseOptions(table=['table3'], amp='bf16')  # bf16 runs on CPUs


def test_options_parsed_from_flags_equal_the_dataclass_built_directly():
    args = build_parser().parse_args(['run', '--table', 'table3', '--rows', 'seg-t-16,seg-s-32',
                                      '--seeds', '2', '--amp', 'bf16', '--no-report'])
    parsed = args.command_.options.from_namespace(args)
    assert parsed == RunOptions(table=['table3'], rows=['seg-t-16', 'seg-s-32'], seeds=2,
                                amp='bf16', report=False)


def test_row_selection_refuses_an_empty_list_and_runs_a_row_named_twice_once(tmp_path):
    empty = harness_cli('status', '--table', 'table3', '--rows', '', '--work-root', tmp_path)
    assert empty.returncode == 2 and empty.stdout == ''
    assert empty.stderr.startswith("error: --rows '' names no row") and \
        empty.stderr.count('\n') == 1
    twice = harness_cli('status', '--table', 'table3', '--rows', 'seg-t-16,seg-t-16',
                        '--work-root', tmp_path)
    assert twice.returncode == 0, twice.stderr
    assert [line.split()[0] for line in twice.stdout.splitlines()[1:]] == ['seg-t-16']


def _parsed(*argv):
    args = build_parser().parse_args(list(argv))
    return args.command_.options.from_namespace(args)


def test_repeated_rows_and_tables_add_up_each_once():
    """``--rows a --rows b`` selects a and b (argparse alone keeps b), as ``--rows a,b`` does;
    a row or a table named again is taken once; the bench's --rows alike."""
    twice = _parsed('status', '--table', 'table3', '--rows', 'seg-t-16',
                    '--rows', 'seg-s-32,seg-t-16', '--rows', 'seg-b-16')
    assert twice.rows == ['seg-t-16', 'seg-s-32', 'seg-b-16']
    assert [r.id for r in twice.selected_rows()] == ['seg-t-16', 'seg-s-32', 'seg-b-16']
    tables = _parsed('status', '--table', 'table3', '--table', 'table6', '--table', 'table3',
                     '--rows', 'seg-t-16', '--rows', 'seg-t-mask-16')
    assert tables.table == ['table3', 'table6']
    assert [(t.name, [r.id for r in rows]) for t, rows in tables.tables()] == [
        ('table3', ['seg-t-16']), ('table6', ['seg-t-mask-16'])]
    assert _parsed('bench', '--rows', 'seg-t-mask-16', '--rows', 'seg-b-16').rows == [
        'seg-t-mask-16', 'seg-b-16']
    assert _parsed('status', '--table', 'table3').rows is None  # default: every row


@pytest.mark.parametrize('profile, flags, slurm_cpus, expected', [
    ('full', [], '3', 3),  # SLURM's allocation of 3 CPUs to the process
    ('full', [], '64', 8),  # capped at 8
    ('smoke', [], '3', 0),  # in the training process
    ('full', ['--workers', '3'], '64', 3),
    ('smoke', ['--workers', '2'], '64', 2),
])
def test_workers_reach_every_loader_of_the_job_config(tmp_path, monkeypatch, profile, flags,
                                                      slurm_cpus, expected):
    """``--workers`` through the real path: flags -> options -> job request -> config; without
    it, the count the CPUs the test allocates allow."""
    from harness.launch.targets import train_targets
    from harness.prepare.job_config import build_config
    monkeypatch.setenv('SLURM_CPUS_PER_TASK', slurm_cpus)
    args = build_parser().parse_args(['run', '--table', 'table3', '--rows', 'seg-t-16',
                                      '--profile', profile, *flags])
    options = args.command_.options.from_namespace(args)
    [target] = train_targets(options.selected_rows(), 1, tmp_path, profile=profile,
                             data_root=tmp_path, workers=options.workers)
    cfg = build_config(target.request)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[loader].num_workers == expected, loader
        assert cfg[loader].persistent_workers == (expected > 0), loader


def test_plan_on_a_config_that_does_not_build_says_so_in_one_line(tmp_path):
    bad = tmp_path / 'broken.py'
    bad.write_text('model = dict(\n')  # a syntax error
    spec = broken_spec(tmp_path, lambda rows: rows[0].update(config=str(bad)))
    result = harness_cli('plan', '--table', spec, '--rows', 'seg-t-16')
    assert result.returncode == 2 and result.stderr.count('\n') == 1, result.stderr
    assert result.stderr.startswith(f'error: table3/seg-t-16: config {bad} does not build: ')
    assert 'SyntaxError' in result.stderr


@pytest.mark.parametrize('env, cpus, processes, expected', [
    ({'SLURM_CPUS_PER_TASK': '2'}, 64, 1, 2),  # SLURM's allocation, not the node's CPUs
    ({}, 16, 8, 2),  # 16 CPUs shared by 8 processes
    ({'LOCAL_WORLD_SIZE': '4'}, 16, 1, 4),  # torchrun says how many share the node
    ({}, 64, 1, 8),  # capped
    ({}, 3, 4, 0),  # fewer CPUs than processes: loading in the training process
])
def test_loader_workers_come_from_the_allocation(env, cpus, processes, expected):
    from harness.core.allocation import loader_workers
    workers, source = loader_workers(processes, env=env, cpus=cpus)
    assert workers == expected
    assert ('SLURM_CPUS_PER_TASK=2' in source) == ('SLURM_CPUS_PER_TASK' in env)
