"""The judgement of a row: the value it is measured against, its verdict, and, before a job
ends, whether its curve is on track (the rules: docs/tracking-and-reports.md, "Verdicts").

The value is the paper's, in the version chosen for the row; where that is unknown, the
single-scale mIoU the authors state for their released model of the same setup. Where both are
known they agree with the v3 table (47.1/47.10, 48.7/48.70, 49.5/49.54), so the release is a
published target all the same.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from ..core.spec import Row

CONFIDENCE = 0.95
TOLERANCE_RULE = 'tolerance'
INTERVAL_RULE = 'interval'
RELEASE = "authors' release"
NO_TARGET = 'no published value'
RELEASE_REFERENCE = 'official_zoo'


def t_quantile(p: float, dof: int) -> float:
    """The ``p`` quantile of Student's t with ``dof`` degrees of freedom.

    SciPy is not among the pins; mpmath (a PyTorch dependency, named on its own in
    requirements-report.txt) has the regularised incomplete beta function that the t
    distribution's CDF is made of, and its root finder inverts it."""
    import mpmath

    def cdf(t):
        tail = mpmath.betainc(dof / 2, mpmath.mpf(1) / 2, 0, dof / (dof + t * t),
                              regularized=True) / 2
        return 1 - tail if t > 0 else tail

    # the normal quantile is a start on the right side of the root for every dof
    start = math.sqrt(2) * float(mpmath.erfinv(2 * p - 1))
    return float(mpmath.findroot(lambda t: cdf(t) - p, (start, start * 20 + 1),
                                 solver='anderson'))


@dataclasses.dataclass(frozen=True)
class Spread:
    """Mean of n seeds, their sample std and the 95% t interval of the mean (n ≥ 2)."""
    n: int
    mean: float | None
    std: float | None
    low: float | None
    high: float | None


def spread(values: list[float]) -> Spread:
    n = len(values)
    if not n:
        return Spread(0, None, None, None, None)
    mean = float(np.mean(values))
    if n < 2:
        return Spread(n, mean, None, None, None)
    std = float(np.std(values, ddof=1))
    half = t_quantile(1 - (1 - CONFIDENCE) / 2, n - 1) * std / math.sqrt(n)
    return Spread(n, mean, std, mean - half, mean + half)


@dataclasses.dataclass(frozen=True)
class Target:
    """What a row's Δ and verdict are taken against: ``label`` is what the "Δ against" column
    says (a paper version, :data:`RELEASE` or :data:`NO_TARGET`)."""
    label: str
    miou: float | None
    source: str | None

    @property
    def name(self) -> str:
        """How a rule refers to the value."""
        return 'release value' if self.label == RELEASE else 'paper value'


def target(row: Row, version: str) -> Target:
    """The value ``row`` is measured against when compared with paper ``version``. The paper
    value itself is never filled in from the release: the spec keeps it unknown."""
    paper = row.paper[version]
    if paper.miou is not None:
        return Target(version, paper.miou, paper.source)
    release = row.references.get(RELEASE_REFERENCE)
    if release is not None:
        return Target(RELEASE, release.miou, release.source)
    return Target(NO_TARGET, None, None)


def judge(ours: Spread, paper: float | None, tolerance: float, name: str) -> tuple[str, str]:
    """(verdict, rule) of a finished row against ``paper`` (a value the rule calls ``name``)."""
    if paper is None:
        return NO_TARGET, '—'
    if ours.mean is None:
        return 'no result', '—'
    if ours.n >= 2:
        inside = ours.low <= paper <= ours.high
        return ('reproduced' if inside else 'not reproduced',
                f'{INTERVAL_RULE}: {name} {"inside" if inside else "outside"} the '
                f'{CONFIDENCE:.0%} t interval of {ours.n} seeds')
    close = abs(ours.mean - paper) <= tolerance
    return ('reproduced' if close else 'not reproduced',
            f'{TOLERANCE_RULE}: |Δ| {"≤" if close else ">"} {tolerance:g} mIoU (1 seed)')


def rule_name(ours: Spread, tolerance: float) -> str:
    """The rule a row's verdict follows, by its number of seeds."""
    if ours.n >= 2:
        return f'{INTERVAL_RULE} ({CONFIDENCE:.0%} t, n={ours.n})'
    return f'{TOLERANCE_RULE} (|Δ| ≤ {tolerance:g} mIoU)'


def curve_at(curve: pd.Series, fraction: float) -> float | None:
    """``curve`` (mIoU by fraction of its schedule) at ``fraction``, linearly interpolated
    between its evaluations; None outside them (a curve is not extrapolated)."""
    curve = curve.dropna().sort_index()
    if not len(curve) or not curve.index[0] - 1e-9 <= fraction <= curve.index[-1] + 1e-9:
        return None
    return float(np.interp(fraction, curve.index.to_numpy(float), curve.to_numpy(float)))


def on_track(miou: float, fraction: float, reference: pd.Series | None, label: str,
             tolerance: float) -> str:
    """Whether a job whose last evaluation gave ``miou`` at ``fraction`` of its schedule keeps
    up with ``reference`` (mIoU by fraction of the schedule)."""
    at = f'{fraction:.0%}'
    if reference is None or not len(reference.dropna()):
        return f'no reference curve at {at}'
    expected = curve_at(reference, fraction)
    if expected is None:
        return f'no {label} point at {at} (it spans {reference.index.min():.0%}–' \
               f'{reference.index.max():.0%})'
    gap = miou - expected
    if gap >= -tolerance:
        return f'on track ({gap:+.2f} mIoU against {label} at {at})'
    return f'behind by {-gap:.2f} mIoU at {at} (against {label})'
