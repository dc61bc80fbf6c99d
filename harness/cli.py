"""Command line: ``python -m harness <command> --help`` (run, evaluate, report, status, plan,
weights, check-data, convert-*, bench). Each command turns its flags into the stages' inputs
(a JobRequest's fields, a launcher) and hands over; the work is done in the stages' packages."""
from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from .core.layout import DEFAULT_REPORTS, DEFAULT_WORK_ROOT, REPO_ROOT
from .core.profiles import DEFAULT_WANDB_PROJECT, LAUNCHERS, PRECISIONS, PROFILES
from .core.request import check_processes
from .core.spec import SpecError, available_tables, load_table


def _rows_arg(value: str) -> list[str]:
    return [v for v in value.split(',') if v]


def _common(p: argparse.ArgumentParser, seeds_default: int | None = 1) -> None:
    p.add_argument('--table', action='append', required=True,
                   help=f"table spec to use, repeatable ({', '.join(available_tables())})")
    p.add_argument('--rows', type=_rows_arg, help='comma-separated row ids (default: all rows)')
    p.add_argument('--profile', choices=PROFILES, default='smoke',
                   help='smoke: tiny models on synthetic data, CPU; full: the paper run')
    p.add_argument('--work-root', type=Path, default=DEFAULT_WORK_ROOT,
                   help='jobs live in <work-root>/<profile>/<table>/<row>/seed<k>/')
    if seeds_default is not None:
        p.add_argument('--seeds', type=int, default=seeds_default,
                       help='number of seeds per row (seeds 0..N-1)')


def _select(tables, row_ids):
    """Rows of each table; with several tables, ``--rows`` may name rows of any of them."""
    if len(tables) == 1 or not row_ids:
        return [(t, t.select(row_ids)) for t in tables]
    known = {row.id for t in tables for row in t.rows}
    unknown = [r for r in row_ids if r not in known]
    if unknown:
        raise SpecError(f"no row {', '.join(map(repr, unknown))} in tables "
                        f"{', '.join(t.name for t in tables)}")
    return [(t, [row for row in t.rows if row.id in row_ids]) for t in tables]


def _data_root(args) -> Path:
    return args.data_root or _default_data_root(args.profile)


def _default_data_root(profile: str) -> Path:
    if profile == 'smoke':
        from .assets.synthetic import DEFAULT_ROOT
        return DEFAULT_ROOT
    from .assets.data import DEFAULT_ADE20K_ROOT
    return Path(os.environ.get('ADE20K_ROOT', DEFAULT_ADE20K_ROOT))


def _launcher(args):
    """The launcher --launcher/--gpus/--nodes/--partition/--time ask for, and the number of
    processes that share each job's batch."""
    from .launch.launchers import LocalLauncher, SlurmLauncher
    if args.gpus < 1 or args.nodes < 1:
        raise SpecError('--gpus and --nodes must be at least 1')
    if args.launcher == 'local' and args.gpus > 1:
        raise SpecError(f'--gpus {args.gpus} needs --launcher torchrun or slurm (local runs one '
                        'process per job)')
    if args.launcher != 'slurm' and args.nodes > 1:
        raise SpecError('--nodes needs --launcher slurm')
    check_processes(args.gpus, args.nodes)
    processes = args.gpus * args.nodes
    if args.launcher != 'slurm':
        return LocalLauncher(processes=processes, verbose=args.verbose), processes
    import re
    import shutil
    try:
        from .launch.slurm import SlurmOptions, parse_time
    except ImportError as err:  # an optional package of this launcher alone
        raise SpecError(f'--launcher slurm needs the Python package {err.name} (pip install '
                        f'{err.name}; environment.yml and requirements.txt include it)') from None
    try:
        minutes = parse_time(args.time)
    except ValueError as err:
        raise SpecError(str(err)) from None
    if args.mem is not None and not re.fullmatch(r'\d+[KMGT]?', args.mem):
        raise SpecError(f"--mem '{args.mem}' is not a SLURM memory size (e.g. 64G, 500000M)")
    if args.poll_interval <= 0:
        raise SpecError('--poll-interval must be a positive number of seconds')
    for flag in ('account', 'qos', 'constraint', 'partition'):
        value = getattr(args, flag)
        if value is not None and (not value or any(c.isspace() for c in value)):
            raise SpecError(f"--{flag} '{value}' is not a SLURM name (no spaces)")
    if shutil.which('sbatch') is None:
        raise SpecError('--launcher slurm: no sbatch on PATH (run on a SLURM login node)')
    tables = ' '.join(f'--table {t}' for t in args.table)
    hint = (f'; `python -m harness status {tables} --profile {args.profile}'
            f"{'' if args.work_root == DEFAULT_WORK_ROOT else f' --work-root {args.work_root}'}`"
            ' follows them')
    return SlurmLauncher(SlurmOptions(
        partition=args.partition, time_min=minutes, nodes=args.nodes,
        tasks_per_node=args.gpus, gpus_per_node=0 if args.profile == 'smoke' else args.gpus,
        cpus_per_task=args.cpus_per_task, account=args.account, qos=args.qos,
        constraint=args.constraint, mem=args.mem, exclusive=args.exclusive, wait=args.wait,
        poll_s=args.poll_interval), status_hint=hint), processes


def _report_after(args, table) -> None:
    if args.report:
        from .results.report import build_report
        out = build_report(table, args.profile, args.work_root, args.reports,
                           wandb=args.wandb_report)
        print(f'report: {out / "report.md"}')


def cmd_run(args) -> int:
    from .launch.launchers import train_targets
    from .launch.preflight import check_configs, check_writable, preflight_full
    if args.seeds < 1:
        raise SpecError('--seeds must be at least 1')
    # smoke jobs run on CPUs; SLURM jobs run on the cluster's GPUs, not this machine's
    no_gpu = args.profile == 'smoke' or (args.launcher != 'slurm' and not _cuda_available())
    if args.amp == 'fp16' and no_gpu:
        raise SpecError('--amp fp16 needs a GPU (mmengine scales fp16 losses on GPUs only); '
                        '--amp bf16 also runs on CPUs')
    if args.amp == 'tf32' and no_gpu:
        raise SpecError('--amp tf32 needs an NVIDIA GPU (Ampere or later: TF32 is a tensor-core '
                        'format; CPUs compute fp32 as is); --amp bf16 also runs on CPUs')
    launcher, processes = _launcher(args)
    selected = _select([load_table(t) for t in args.table], args.rows)
    data_root = _data_root(args)
    all_rows = [r for _, rows in selected for r in rows]
    if args.profile == 'full':  # the cheap checks first
        preflight_full(all_rows, data_root, args.weights_root)
    check_configs(all_rows, args.profile, processes, args.weights_root)
    check_writable(args.work_root)
    if args.profile == 'smoke':
        from .assets.synthetic import ensure_dataset
        ensure_dataset(data_root)
    failed = 0
    for table, rows in selected:
        failed += launcher.run(train_targets(
            rows, args.seeds, args.work_root, profile=args.profile, data_root=data_root,
            gpus=processes, weights_root=args.weights_root, wandb_project=args.wandb_project,
            amp=args.amp, max_iters=args.max_iters))
        _report_after(args, table)
    if failed:
        print(f'{failed} job(s) did not finish; re-run the same command to retry/resume them.')
    return 1 if failed else 0


def _cuda_available() -> bool:
    import torch
    return torch.cuda.is_available()


def cmd_evaluate(args) -> int:
    from .launch.launchers import evaluate_ours_targets, evaluate_released_targets
    from .launch.preflight import preflight_full
    launcher, processes = _launcher(args)
    selected = _select([load_table(t) for t in args.table], args.rows)
    data_root = _data_root(args)
    if args.profile == 'full':  # the data only: the checkpoints replace the pretrained weights
        preflight_full([], data_root)
    if not args.ours and not args.checkpoints.is_dir():
        raise SpecError(f'no checkpoint folder {args.checkpoints} (convert the released '
                        'checkpoint.pth files into it with `python -m harness convert-official`)')
    options = dict(profile=args.profile, data_root=data_root, gpus=processes,
                   wandb_project=args.wandb_project, multi_scale=args.multi_scale)
    failed = 0
    for table, rows in selected:
        if args.ours:
            targets = evaluate_ours_targets(rows, args.seeds or 1, args.work_root, **options)
        else:
            targets = evaluate_released_targets(rows, args.work_root, args.checkpoints,
                                                **options)
        failed += launcher.run(targets)
        _report_after(args, table)
    return 1 if failed else 0


def cmd_check_data(args) -> int:
    from .assets.data import DataError, check_files, check_layout, unpack
    root = args.data_root or _default_data_root('full')
    if args.workers is not None and args.workers < 1:
        raise SpecError('--workers must be at least 1')
    try:
        if args.zip:
            root = unpack(args.zip, root.parent)
            print(f'unpacked {args.zip} -> {root}')
        if args.layout_only:
            found = check_layout(root)
        else:
            found = check_files(root, workers=args.workers)
    except DataError as err:
        if err.count == 1:
            raise SpecError(str(err)) from None
        for defect in err.defects:  # every defect on stdout, the verdict on stderr
            print(f'  {defect}')
        more = err.count - len(err.defects)
        if more:
            print(f'  ... and {more} more')
        raise SpecError(f'{err.count} defects in {root} (listed above); the first: '
                        f'{err.defects[0]}') from None
    what = 'layout' if args.layout_only else 'every file decoded, labels in range'
    print(f'ADE20K ok: {root} ({found["training"]} training, {found["validation"]} validation '
          f'images; {what})')
    return 0


def cmd_report(args) -> int:
    from .results.report import build_report
    for name in args.table:
        out = build_report(load_table(name), args.profile, args.work_root, args.reports,
                           args.paper_version, args.tolerance, wandb=args.wandb_report)
        print(f'report: {out / "report.md"}')
    return 0


def cmd_status(args) -> int:
    import time

    from .core.state import progress_text, read_state
    from .results.collect import collect_jobs
    for table, rows in _select([load_table(name) for name in args.table], args.rows):
        jobs, _ = collect_jobs(rows, args.profile, args.work_root, args.seeds)
        print(f'{table.name} ({args.profile}):')
        for j in jobs.itertuples():
            state = read_state(j.work_dir)
            progress = state.get('progress')
            if j.status == 'finished' and j.mIoU_final is not None:
                extra = f'mIoU {j.mIoU_final:.2f}'
            elif progress:  # iteration/total, percent and, while it runs, the time left
                extra = progress_text(progress, time.time(), left=j.status == 'running')
                extra += f' -- {j.error}' if j.error else ''
            else:
                extra = j.error or (f'at iteration {j.iters}' if j.iters else '')
            status = j.status
            slurm_id = state.get('slurm_job_id')
            if slurm_id and status in ('queued', 'running'):
                status = f'{status} (slurm job {slurm_id})'
            print(f'  {j.row:<16} seed{j.seed}  {status:<12} {extra}')
    return 0


def cmd_sync_help(args) -> int:
    """How to upload the offline W&B runs of every job under the work root, and of the
    reports built from them."""
    from .core.layout import wandb_run_globs
    from .results.report import report_run_globs, reports_root
    wandb = Path(sys.executable).with_name('wandb')
    shown = os.path.relpath(wandb) if wandb.is_relative_to(Path.cwd()) else wandb
    print(f"W&B runs are offline ({os.environ.get('WANDB_MODE', 'offline')}). To upload them: "
          f'{shown} login, then')
    reports = reports_root(args.work_root, args.reports)
    for pattern in (wandb_run_globs(Path(os.path.relpath(args.work_root)))
                    + report_run_globs(Path(os.path.relpath(reports)))):
        print(f'  {shown} sync {pattern}')
    return 0


def cmd_convert_official(args) -> int:
    from .assets.convert import convert_official_checkpoint
    row = load_table(args.table).row(args.row)
    out = args.out or REPO_ROOT / 'checkpoints' / 'official' / f'{row.id}.pth'
    print(convert_official_checkpoint(args.checkpoint, row, out))
    return 0


def cmd_convert_pretrained(args) -> int:
    """``weights --from FILE`` for one row, to its weights path or ``--out``: the same
    conversion and the same key and shape checks."""
    from .assets.weights import DEFAULT_ORIGINALS, install_row
    row = load_table(args.table).row(args.row)
    print(install_row(row, REPO_ROOT, REPO_ROOT / DEFAULT_ORIGINALS, source=args.checkpoint,
                      out=args.out))
    return 0


def cmd_bench(args) -> int:
    from .bench import print_ratios, run_bench, select_cases
    if args.device.startswith('cuda'):
        import torch
        if not torch.cuda.is_available():
            raise SpecError(f'--device {args.device}: no CUDA device visible to torch '
                            f'{torch.__version__}')
    if min(args.repeats, args.rounds, args.slide_batch) < 1 or args.warmup < 0:
        raise SpecError('--repeats, --rounds and --slide-batch must be at least 1, --warmup at '
                        'least 0')
    try:
        chosen = select_cases(args.device, args.rows)
    except ValueError as err:
        raise SpecError(str(err)) from None
    result = run_bench(args.device, args.repeats, args.warmup, args.amp, args.compile,
                       args.slide_batch, args.overhead, args.out, chosen, args.tf32,
                       args.profile, args.rounds)
    print(f"bench: {args.out / 'bench.md'}")
    print_ratios(result)
    return 0


def cmd_rehearse(args) -> int:
    import warnings
    # mmengine imports pkg_resources, whose deprecation notice would sit among the rows' lines
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated', category=UserWarning)
    from .rehearse import rehearse
    if args.device not in ('cpu', 'cuda'):
        raise SpecError(f"--device {args.device}: choose cpu or cuda")
    if args.device == 'cuda' and not _cuda_available():
        raise SpecError('--device cuda: no CUDA device visible to torch')
    if args.amp in ('fp16', 'tf32') and args.device == 'cpu':
        raise SpecError(f'--amp {args.amp} needs a GPU; --amp bf16 also runs on CPUs')
    if args.iters < 2:
        raise SpecError('--iters must be at least 2 (the first iteration is the warm-up)')
    if args.batch is not None and args.batch < 1:
        raise SpecError(f'--batch must be at least 1, got {args.batch}')
    rows = [r for _, rs in _select([load_table(t) for t in args.table], args.rows) for r in rs]
    run = rehearse(rows, args.device, args.amp, args.iters, args.batch, args.multi_scale,
                   args.work_root, args.out, args.data_root, args.keep_checkpoints,
                   args.resume)
    failed = [key for key, entry in run['rows'].items() if 'error' in entry]
    print(f"rehearsal: {args.out / 'rehearsal.md'} ({len(run['rows']) - len(failed)} of "
          f"{len(run['rows'])} rows rehearsed)")
    return 1 if failed else 0


def cmd_plan(args) -> int:
    from .prepare.plan import print_plan
    if args.seeds < 1:
        raise SpecError('--seeds must be at least 1')
    check_processes(args.gpus)
    tables = [load_table(t) for t in args.table]
    from .prepare.plan import load_rehearsals
    print_plan(_select(tables, args.rows), args.profile, args.gpus, args.seeds, args.launcher,
               args.work_root, _data_root(args), args.weights_root,
               load_rehearsals(args.rehearsals), args.device)
    return 0


def cmd_weights(args) -> int:
    from .assets.weights import DEFAULT_ORIGINALS, install_rows
    selected = [row for _, rows in _select([load_table(t) for t in args.table], args.rows)
                for row in rows]
    source = getattr(args, 'from')
    if source is not None and len({r.pretrained_file for r in selected}) != 1:
        raise SpecError('--from FILE converts one release: select the row(s) it belongs to '
                        'with --rows')
    originals = args.originals or Path(os.environ.get('WEIGHTS_DIR') or
                                       args.weights_root / DEFAULT_ORIGINALS)
    failures = install_rows(selected, args.weights_root, originals, source, args.url_base,
                            args.timeout)
    return 1 if failures else 0


def _launcher_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('--launcher', choices=LAUNCHERS, default='local',
                   help='local: one process per job, jobs one after another; torchrun: --gpus '
                        'processes per job on this machine; slurm: one SLURM job array, a task '
                        'per row x seed')
    p.add_argument('--gpus', type=int, default=1,
                   help='processes (GPUs) per job, per node with slurm; the total batch of 8 is '
                        'divided among all of them')
    p.add_argument('--nodes', type=int, default=1, help='slurm: nodes per job')
    p.add_argument('--partition', help='slurm: partition (default: the cluster\'s)')
    p.add_argument('--time', default='24:00:00',
                   help='slurm: time limit per job (a job that reaches it checkpoints, is '
                        'requeued and resumes)')
    p.add_argument('--cpus-per-task', type=int, help='slurm: CPUs per training process')
    p.add_argument('--account', help='slurm: account to charge')
    p.add_argument('--qos', help='slurm: quality of service')
    p.add_argument('--constraint', help="slurm: node features, e.g. 'a100|h100'")
    p.add_argument('--mem', help='slurm: memory per node (64G, 500000M; default: the '
                                 "partition's)")
    p.add_argument('--exclusive', action='store_true', help='slurm: whole nodes per job')
    p.add_argument('--no-wait', dest='wait', action='store_false',
                   help='slurm: submit and return (default: wait until the jobs end)')
    p.add_argument('--poll-interval', type=float, default=30.0, metavar='S',
                   help='slurm: seconds between two squeue calls while waiting (one call '
                        'for all jobs)')


def _report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument('--reports', type=Path, metavar='DIR',
                   help='report folder root (default: reports/ for the default work root, '
                        '<work-root>/reports/ for another)')
    p.add_argument('--no-wandb-report', dest='wandb_report', action='store_false',
                   help='do not log the report as a W&B run')


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m harness',
        description='Reproduce the Segmenter ADE20K tables (arXiv 2105.05633) with mmseg.')
    sub = parser.add_subparsers(dest='command', required=True)

    run = sub.add_parser('run', help='train and evaluate rows x seeds (skips finished jobs, '
                                     'resumes interrupted ones)')
    _common(run)
    run.add_argument('--data-root', type=Path, help='ADEChallengeData2016 folder (smoke: the '
                     'synthetic copy; full: $ADE20K_ROOT or data/ade/ADEChallengeData2016)')
    run.add_argument('--weights-root', type=Path, default=REPO_ROOT,
                     help="folder the spec's weight paths (weights/...) are relative to")
    run.add_argument('--max-iters', type=int, metavar='N',
                     help='a shortened schedule for cheap trials: train N iterations (the poly '
                          'decay ends at N); the report marks the row shortened, no verdict')
    run.add_argument('--amp', choices=PRECISIONS,
                     help='reduced-precision training (tf32: fp32 tensors, TF32 tensor-core '
                          'matmuls): faster, departs from the paper (fp32); evaluation stays '
                          'fp32; the report says so')
    run.add_argument('--wandb-project',
                     default=os.environ.get('WANDB_PROJECT', DEFAULT_WANDB_PROJECT))
    _report_args(run)
    run.add_argument('--no-report', dest='report', action='store_false',
                     help='do not rebuild the report afterwards')
    run.add_argument('-v', '--verbose', action='store_true', help='stream job logs')
    _launcher_args(run)
    run.set_defaults(func=cmd_run)

    evaluate = sub.add_parser('evaluate', help="evaluate the authors' released checkpoints "
                                               '(converted, <checkpoints>/<row>.pth), or with '
                                               '--ours the trained jobs')
    _common(evaluate)
    evaluate.add_argument('--ours', action='store_true',
                          help="evaluate each finished row x seed's last checkpoint instead")
    evaluate.set_defaults(profile='full')
    evaluate.add_argument('--checkpoints', type=Path,
                          default=REPO_ROOT / 'checkpoints' / 'official')
    evaluate.add_argument('--multi-scale', action='store_true',
                          help='official multi-scale evaluation (ratios 0.5-1.75, flip)')
    evaluate.add_argument('--data-root', type=Path)
    evaluate.add_argument('--wandb-project',
                          default=os.environ.get('WANDB_PROJECT', DEFAULT_WANDB_PROJECT))
    _report_args(evaluate)
    evaluate.add_argument('--no-report', dest='report', action='store_false')
    evaluate.add_argument('-v', '--verbose', action='store_true')
    _launcher_args(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    report = sub.add_parser('report', help='rebuild the report from the job folders on disk')
    _common(report, seeds_default=None)
    _report_args(report)
    report.add_argument('--paper-version', choices=('v1', 'v3'),
                        help='paper version the delta is computed against for every row '
                             "(default: the version matching each row's setup, its spec's "
                             '`matches`)')
    report.add_argument('--tolerance', type=float, default=1.0,
                        help='|delta| in mIoU points that counts as reproduced')
    report.set_defaults(func=cmd_report)

    data = sub.add_parser('check-data', help='verify an ADE20K folder (or unpack the official '
                                             'zip first): counts, pairs, readable files, labels')
    data.add_argument('--data-root', type=Path, help='ADEChallengeData2016 folder (default: '
                      '$ADE20K_ROOT or data/ade/ADEChallengeData2016)')
    data.add_argument('--zip', type=Path, help='ADEChallengeData2016.zip to unpack beside it')
    data.add_argument('--layout-only', action='store_true',
                      help='folders, pairs and counts only (no file is decoded)')
    data.add_argument('--workers', type=int,
                      help='processes decoding files (default: one per core)')
    data.set_defaults(func=cmd_check_data)

    rehearse = sub.add_parser('rehearse', help="each row's full-profile job at its real size "
                              'for a few iterations (synthetic ADE20K-sized data, random weights '
                              'in the release layout): train, resume, evaluate, measured')
    rehearse.add_argument('--table', action='append', required=True,
                          help=f"table spec, repeatable ({', '.join(available_tables())})")
    rehearse.add_argument('--rows', type=_rows_arg, help='comma-separated row ids (default: all)')
    rehearse.add_argument('--device', default='cpu', help='cpu or cuda')
    rehearse.add_argument('--amp', choices=PRECISIONS, help='train in this precision (default: '
                          "fp32, the paper's)")
    rehearse.add_argument('--iters', type=int, default=4, metavar='N',
                          help='training iterations per row (the first is the warm-up)')
    rehearse.add_argument('--batch', type=int, metavar='B', help='per-GPU batch instead of the '
                          'real 8 (for a device the real one does not fit; memory at the real '
                          'batch is then not measured)')
    rehearse.add_argument('--multi-scale', action='store_true',
                          help='also time the multi-scale + flip evaluation')
    rehearse.add_argument('--data-root', type=Path, help='the ADE20K-sized synthetic dataset '
                          '(default: generated once into .cache/synthetic_ade20k_sized/)')
    rehearse.add_argument('--work-root', type=Path, default=DEFAULT_WORK_ROOT / 'rehearsal',
                          help="the rehearsal's job folders and converted weights (replaced "
                          'row by row; checkpoints deleted once measured)')
    rehearse.add_argument('--no-resume', dest='resume', action='store_false',
                          help='skip the resume from the checkpoint (e.g. when rehearsing '
                          'again in another precision)')
    rehearse.add_argument('--keep-checkpoints', action='store_true',
                          help="keep each row's checkpoints (deleted once measured by default)")
    rehearse.add_argument('--out', type=Path, default=DEFAULT_REPORTS / 'rehearsal')
    rehearse.set_defaults(func=cmd_rehearse)

    plan = sub.add_parser('plan', help='dry run: per row x seed the config, batch, iterations, '
                          'GPU-hours, disk, weights and data; launches nothing, writes nothing')
    _common(plan)
    plan.set_defaults(profile='full')
    plan.add_argument('--gpus', type=int, default=1, help='GPUs per job (per-GPU batch = 8/gpus)')
    plan.add_argument('--launcher', choices=LAUNCHERS, default='local')
    plan.add_argument('--data-root', type=Path)
    plan.add_argument('--weights-root', type=Path, default=REPO_ROOT,
                      help="folder the spec's weight paths (weights/...) are relative to")
    plan.add_argument('--rehearsals', type=Path, default=DEFAULT_REPORTS / 'rehearsal',
                      help='where `rehearse` wrote its results (GPU-hours come from them)')
    plan.add_argument('--device', help="the device kind whose rehearsals give the time, as "
                      "rehearsal.md names it ('cuda: NVIDIA H200', 'cpu'; default: any GPU)")
    plan.set_defaults(func=cmd_plan)

    weights = sub.add_parser('weights', help="download, verify and convert the pretrained "
                             "weights each row starts from, into its pretrained.file")
    weights.add_argument('--table', action='append', required=True,
                         help=f"table spec, repeatable ({', '.join(available_tables())})")
    weights.add_argument('--rows', type=_rows_arg, help='comma-separated row ids (default: all)')
    weights.add_argument('--from', type=Path, metavar='FILE',
                         help='convert this local release instead of downloading it')
    weights.add_argument('--originals', type=Path, metavar='DIR',
                         help='folder of downloaded (unconverted) releases, looked up and '
                         'downloaded into by name (default: $WEIGHTS_DIR or weights/original)')
    weights.add_argument('--weights-root', type=Path, default=REPO_ROOT,
                         help="folder the spec's weight paths (weights/...) are relative to")
    weights.add_argument('--url-base', help='download from a mirror: this URL + the path of '
                         "the spec's URL")
    weights.add_argument('--timeout', type=float, default=60.0,
                         help='seconds without data before a download gives up')
    weights.set_defaults(func=cmd_weights)

    sync = sub.add_parser('sync-help', help='how to upload the offline W&B runs of the jobs')
    sync.add_argument('--work-root', type=Path, default=DEFAULT_WORK_ROOT)
    sync.add_argument('--reports', type=Path, help='the reports root, when it was given to '
                      'run/report (default: as they choose it from the work root)')
    sync.set_defaults(func=cmd_sync_help)

    status = sub.add_parser('status', help='state of every row x seed of a table')
    _common(status)
    status.set_defaults(func=cmd_status)

    bench = sub.add_parser('bench', help='time our row models against stock mmseg (training '
                                         'step, sliding-window evaluation, harness overhead)')
    bench.add_argument('--device', default='cpu', help='cpu (reduced sizes) or cuda (512x512 '
                       'Seg-B/16 and Seg-B†-Mask/16)')
    bench.add_argument('--repeats', type=int, default=5, help='measured training steps of each '
                       'side (split among --rounds, rounded up) and evaluation passes')
    bench.add_argument('--warmup', type=int, default=2)
    bench.add_argument('--rounds', type=int, default=3, help='training: alternate fresh stock '
                       'and ours processes this many times, --repeats steps split among them')
    bench.add_argument('--amp', choices=[p for p in PRECISIONS if p != 'tf32'],
                       help='also time our training step under mixed precision')
    bench.add_argument('--compile', action='store_true', help='torch.compile our model')
    bench.add_argument('--tf32', action='store_true',
                       help='also time our fp32 step with TF32 matmuls (GPU)')
    bench.add_argument('--profile', action='store_true',
                       help="add the top operators of one training step of ours")
    bench.add_argument('--rows', type=_rows_arg, help='bench cases by row id (default: the '
                       "device's cases)")
    bench.add_argument('--slide-batch', type=int, default=8, help='windows per forward')
    bench.add_argument('--no-overhead', dest='overhead', action='store_false',
                       help='skip the harness-vs-bare-Runner smoke job timing')
    bench.add_argument('--out', type=Path, default=DEFAULT_REPORTS / 'bench')
    bench.set_defaults(func=cmd_bench)

    converters = [
        ('convert-official', cmd_convert_official, "convert an authors' released Segmenter "
         "checkpoint.pth into this project's model (checks: no missing/unexpected key)",
         'default: checkpoints/official/<row>.pth'),
        ('convert-pretrained', cmd_convert_pretrained, 'convert a timm/DeiT ViT release (.pth) '
         "into the mmseg layout, at the row's weights path (as `weights --from`: every key and "
         "shape checked against the row's encoder)", "default: the row's pretrained.file"),
    ]
    for name, func, help_text, out_help in converters:
        convert = sub.add_parser(name, help=help_text)
        convert.add_argument('checkpoint', type=Path)
        convert.add_argument('--table', required=True, choices=available_tables())
        convert.add_argument('--row', required=True)
        convert.add_argument('--out', type=Path, help=out_help)
        convert.set_defaults(func=func)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        return args.func(args)
    except (SpecError, FileExistsError) as err:
        print(f'error: {err}', file=sys.stderr)
        return 2
    except OSError as err:  # a disk or permission problem outside the checks: still one line
        print(f'error: {err}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print('interrupted: run the same command again to resume', file=sys.stderr)
        return 130
