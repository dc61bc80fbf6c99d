"""Training data that is a function of (seed, position in the run) alone.

Position ``p`` is the ``p``-th sample of the whole run: the global batch of iteration ``i``
holds positions ``i * B`` .. ``i * B + B - 1`` (``B`` = the total batch), whichever process
and loader worker loads each one. The sample at ``p`` and every random draw of its
augmentations are seeded from (seed, p):

- :class:`PositionSampler` yields ``(index, seed, position)``: the dataset index is epoch
  ``p // len(dataset)``'s permutation (seeded from (seed, epoch)) at ``p % len(dataset)``.
  Process ``r`` of ``W`` takes positions ``r, r + W, r + 2W, ...``, so the ``W`` per-process
  batches of an iteration are together that iteration's global batch.
- :class:`PositionSeededDataset` runs the wrapped dataset (mmseg's loading and transforms,
  unchanged) for that index with numpy's and python's global RNGs, which mmcv/mmseg
  transforms draw from, and torch's CPU RNG seeded from (seed, p), restoring them afterwards
  (with ``num_workers=0`` they are the training process's own, and torch's feeds dropout).
- :class:`DataResumeHook`: a job resumed at iteration ``k`` starts the sampler at position
  ``k * B`` and hands mmengine's loop, which skips ``k`` batches by calling ``next`` ``k`` times,
  ``k`` placeholders instead of ``k`` loaded batches: constant time whatever ``k``.
"""
from __future__ import annotations

import random
from typing import Iterator

import numpy as np
import torch
from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from mmseg.registry import DATA_SAMPLERS, DATASETS, HOOKS
from torch.utils.data import Dataset, Sampler

_ORDER, _AUGMENT = 0, 1  # separate streams: an epoch's permutation, a sample's augmentations


def _seed_sequence(seed: int, stream: int, n: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, stream, n])


@DATA_SAMPLERS.register_module()
class PositionSampler(Sampler):
    """Infinite shuffled sampler (like mmengine's ``InfiniteSampler``) whose output at each
    global position depends on (seed, position) only, and which can start at any position
    without producing the ones before it."""

    def __init__(self, dataset, seed: int | None = None, shuffle: bool = True):
        self.size = len(dataset)
        # mmengine passes the run's seed (``randomness.seed``); without one every process must
        # still agree, so a fixed default rather than a per-process random one
        self.seed = 0 if seed is None else int(seed)
        self.shuffle = shuffle
        self.rank, self.world_size = get_dist_info()
        self.start = 0  # the first global position the next iterator yields
        self._epoch, self._order = None, None

    def start_at(self, position: int) -> None:
        """The next iterator starts at global ``position`` (a multiple of the world size)."""
        self.start = position

    def index(self, position: int) -> int:
        """The dataset index of global ``position``."""
        epoch, offset = divmod(position, self.size)
        if not self.shuffle:
            return offset
        if epoch != self._epoch:
            rng = np.random.default_rng(_seed_sequence(self.seed, _ORDER, epoch))
            self._epoch, self._order = epoch, rng.permutation(self.size)
        return int(self._order[offset])

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        position = self.start + self.rank
        while True:
            yield self.index(position), self.seed, position
            position += self.world_size

    def __len__(self) -> int:
        return self.size

    def set_epoch(self, epoch: int) -> None:
        """Nothing to do: the position already says which epoch a sample belongs to."""


class _SeededRandomness:
    """numpy's, python's and torch's (CPU) global RNGs seeded from (seed, position) inside,
    restored on exit."""

    def __init__(self, seed: int, position: int):
        self.words = _seed_sequence(seed, _AUGMENT, position).generate_state(4)

    def __enter__(self):
        self.saved = np.random.get_state(), random.getstate(), torch.get_rng_state()
        np.random.seed(self.words)
        random.seed(int.from_bytes(self.words.tobytes(), 'little'))
        torch.default_generator.manual_seed(int(self.words[0]) << 32 | int(self.words[1]))

    def __exit__(self, *exc):
        numpy_state, python_state, torch_state = self.saved
        np.random.set_state(numpy_state)
        random.setstate(python_state)
        torch.set_rng_state(torch_state)


@DATASETS.register_module()
class PositionSeededDataset(Dataset):
    """``dataset`` (a config or a dataset) whose items, asked for as ``(index, seed,
    position)``, are loaded and augmented with RNGs seeded from (seed, position). A plain index
    is passed through unchanged."""

    def __init__(self, dataset, lazy_init: bool = False):
        self.dataset = DATASETS.build(dataset) if isinstance(dataset, dict) else dataset
        if not lazy_init:
            self.full_init()

    @property
    def metainfo(self) -> dict:
        return self.dataset.metainfo

    def full_init(self) -> None:
        if hasattr(self.dataset, 'full_init'):
            self.dataset.full_init()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item):
        if not isinstance(item, tuple):
            return self.dataset[item]
        index, seed, position = item
        with _SeededRandomness(seed, position):
            return self.dataset[index]


class _ResumedIterator:
    """The train loop's data iterator after a resume at iteration ``skip``: ``skip`` empty
    placeholders for the batches mmengine's loop discards, then the loader from the sampler's
    start."""

    def __init__(self, skip: int, dataloader):
        self.skip, self.dataloader, self.iterator = skip, dataloader, None

    def __iter__(self):
        return self

    def __next__(self):
        if self.skip:
            self.skip -= 1
            return None
        if self.iterator is None:  # the loader's workers start here, at the sampler's start
            self.iterator = iter(self.dataloader)
        return next(self.iterator)


@HOOKS.register_module()
class DataResumeHook(Hook):
    """On a resume at iteration ``k``: the train loader's :class:`PositionSampler` starts at
    iteration ``k``'s global batch, and no batch before it is loaded."""

    priority = 'VERY_HIGH'  # before any hook that could ask the loop for a batch

    def before_train(self, runner) -> None:
        iteration = runner.iter
        loop = runner.train_loop
        sampler = getattr(loop.dataloader, 'sampler', None)
        if iteration == 0 or not isinstance(sampler, PositionSampler):
            return
        position = iteration * loop.dataloader.batch_size * sampler.world_size
        sampler.start_at(position)
        # replacing the iterator built with the loop drops it (and the batches its workers
        # prefetched from position 0); a new one starts where the sampler now starts
        loop.dataloader_iterator = _ResumedIterator(iteration, loop.dataloader)
        runner.logger.info(
            f'Data resumes at iteration {iteration}, sample position {position}: the '
            f'{iteration} batches before it are skipped without loading them (the loop\'s '
            f'"Advance dataloader" below walks placeholders)')
