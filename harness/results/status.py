"""``status``: one line per row x seed of a table, from its job folder."""
from __future__ import annotations

import time
from pathlib import Path

from ..core.spec import Row
from ..core.state import progress_text, read_state
from .collect import collect_jobs


def status_lines(rows: list[Row], profile: str, work_root: Path,
                 seeds: int | None = None) -> list[str]:
    jobs, _ = collect_jobs(rows, profile, work_root, seeds, hashes=False)  # a quick look
    lines = []
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
        if j.marks:
            extra += ' -- ' + '; '.join(j.marks)
        status = j.status
        if (slurm_id := state.get('slurm_job_id')) and status in ('queued', 'running'):
            status = f'{status} (slurm job {slurm_id})'
        lines.append(f'  {j.row:<16} seed{j.seed}  {status:<12} {extra}')
    return lines
