"""Training data as a function of (seed, position) only: the same batches and losses whatever
the loader workers or processes, and a resume that skips to its iteration without loading the
batches before it.

Real smoke jobs of a linear row on the synthetic ADE20K copy, trained by mmengine's Runner in
this process (the loader-worker count is not a command-line option), and a real two-process
gloo group for the split batch.
"""
import hashlib
import shutil

import pytest
import torch
import torch.multiprocessing as mp
from mmengine.hooks import Hook

from harness.core.layout import POINTER, checkpoint_name
from harness.core.profiles import TOTAL_BATCH
from harness.core.request import JobRequest
from harness.core.spec import load_table
from harness.prepare.job_config import build_config

pytestmark = pytest.mark.e2e
ROW = load_table('table3').row('seg-t-16')
ITERS = 4
RESUME_AT = 2
SEED = 5


def _sample_hashes(data_batch) -> list[str]:
    """One hash per sample of a batch: the augmented image and label tensors."""
    return [hashlib.sha256(img.numpy().tobytes() + sample.gt_sem_seg.data.numpy().tobytes())
            .hexdigest() for img, sample in zip(data_batch['inputs'], data_batch['data_samples'])]


class _Record(Hook):
    """What each trained iteration loaded and the losses it logged."""
    priority = 'LOWEST'

    def __init__(self):
        self.batches, self.losses = {}, {}

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.batches[batch_idx + 1] = _sample_hashes(data_batch)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        self.losses[batch_idx + 1] = {k: v.item() for k, v in outputs.items()}

    def after_train(self, runner):
        self.sampler_start = runner.train_loop.dataloader.sampler.start


def _config(work_dir, data_root, name, workers=0, gpus=1, seed=SEED, checkpoints=False):
    cfg = build_config(JobRequest(row=ROW, profile='smoke', seed=seed, work_dir=work_dir,
                                  data_root=data_root, gpus=gpus, max_iters=ITERS))
    cfg.train_dataloader.update(num_workers=workers, persistent_workers=workers > 0)
    cfg.train_cfg.val_begin = ITERS + 1  # the losses are the point here: no evaluation
    if checkpoints:
        cfg.default_hooks.checkpoint.update(interval=RESUME_AT, max_keep_ckpts=-1)
    else:
        cfg.default_hooks.checkpoint = None
    # no W&B run, no curves file: the hook below records what the test compares
    cfg.visualizer.vis_backends = []
    cfg.visualizer.name = cfg.experiment_name = name  # mmengine keeps one instance per name
    return cfg


def _train(cfg) -> _Record:
    from mmengine.runner import Runner

    from harness.runtime.safe_resume import enable_safe_resume
    enable_safe_resume()
    runner = Runner.from_cfg(cfg)
    record = _Record()
    runner.register_hook(record)
    runner.train()
    return record


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory, synthetic_root):
    work = tmp_path_factory.mktemp('uninterrupted')
    return work, _train(_config(work, synthetic_root, 'resume-data-w0', checkpoints=True))


def test_loader_workers_change_neither_batches_nor_losses(uninterrupted, tmp_path,
                                                          synthetic_root):
    _, ref = uninterrupted
    assert sorted(ref.losses) == list(range(1, ITERS + 1))
    assert len({h for hashes in ref.batches.values() for h in hashes}) == ITERS * TOTAL_BATCH
    # 4 workers: the resumed job below
    run = _train(_config(tmp_path, synthetic_root, 'resume-data-w2', workers=2))
    assert run.batches == ref.batches
    assert run.losses == ref.losses


def test_resume_skips_to_its_iteration_without_loading_the_batches_before(
        uninterrupted, tmp_path, synthetic_root):
    ref_dir, ref = uninterrupted
    work = tmp_path / 'resumed'
    work.mkdir()
    checkpoint = work / checkpoint_name(RESUME_AT)
    shutil.copy(ref_dir / checkpoint_name(RESUME_AT), checkpoint)
    (work / POINTER).write_text(str(checkpoint))
    # resumed with another worker count: data still from (seed, position) alone
    run = _train(_config(work, synthetic_root, 'resume-data-resumed', workers=4))
    assert sorted(run.batches) == list(range(RESUME_AT + 1, ITERS + 1))
    assert run.batches == {i: ref.batches[i] for i in run.batches}
    assert run.losses == {i: ref.losses[i] for i in run.losses}  # dropout masks too
    # the loader that fed it started at the resumed iteration (a replay starts at 0)
    assert (ref.sampler_start, run.sampler_start) == (0, RESUME_AT * TOTAL_BATCH)
    log = next(work.glob('*/*.log')).read_text()
    assert f'Data resumes at iteration {RESUME_AT}, sample position ' \
           f'{RESUME_AT * TOTAL_BATCH}' in log


def _rank_hashes(rank, world, data_root, out):
    """One of ``world`` gloo processes: the per-iteration sample hashes its loader yields."""
    import torch.distributed as dist
    dist.init_process_group('gloo', init_method=f'file://{out}/rendezvous', rank=rank,
                            world_size=world)
    try:
        torch.save(_loader_hashes(_config(None, data_root, f'rank{rank}', workers=rank * 2,
                                          gpus=world)), out / f'rank{rank}.pt')
    finally:
        dist.destroy_process_group()


def _loader_hashes(cfg, start=0) -> dict[int, list[str]]:
    """The job's train loader, built by mmengine, from iteration ``start`` on."""
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    from mmseg.utils import register_all_modules

    import harness.models  # noqa: F401
    import harness.runtime  # noqa: F401
    register_all_modules(init_default_scope=False)
    init_default_scope('mmseg')
    loader = Runner.build_dataloader(cfg.train_dataloader, seed=cfg.randomness.seed)
    loader.sampler.start_at(start * loader.batch_size * loader.sampler.world_size)
    batches = iter(loader)
    return {i: _sample_hashes(next(batches)) for i in range(start + 1, ITERS + 1)}


def test_two_processes_load_the_global_batch_of_one(tmp_path, synthetic_root):
    one = _loader_hashes(_config(None, synthetic_root, 'one-process'))
    # rank 0 without loader workers, rank 1 with two
    mp.start_processes(_rank_hashes, args=(2, synthetic_root, tmp_path), nprocs=2,
                       start_method='fork')  # mmseg already imported: no second import
    ranks = [torch.load(tmp_path / f'rank{r}.pt') for r in range(2)]
    for i, batch in one.items():
        halves = [r[i] for r in ranks]
        assert [len(h) for h in halves] == [TOTAL_BATCH // 2] * 2
        assert sorted(halves[0] + halves[1]) == sorted(batch), f'iteration {i}'
    # a loader started at an iteration yields what the uninterrupted one yields there
    later = _loader_hashes(_config(None, synthetic_root, 'one-process'), start=RESUME_AT)
    assert later == {i: one[i] for i in later}
    # the seed, not the process or worker layout, is what the data depends on
    other = _loader_hashes(_config(None, synthetic_root, 'one-process', seed=SEED + 1))
    assert not set(other[1]) & set(one[1])
