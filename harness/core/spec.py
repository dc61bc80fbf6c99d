"""Row specs: the paper's tables as data (``experiments/<table>.yaml``), validated on load.

A malformed spec raises :class:`SpecError` with one line naming the file, the row and the field.
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import re
from pathlib import Path
from typing import Any

import yaml

from .datasets import DEFAULT_DATASET, DATASETS_FILE, Dataset, datasets
from .errors import SpecError
from .layout import REPO_ROOT

EXPERIMENTS = REPO_ROOT / 'experiments'
SEED_LOGS = EXPERIMENTS / 'reference' / 'seed_logs'
PAPER_VERSIONS = ('v1', 'v3')
CONFIDENCES = ('read', 'summary', 'inferred')
DECODERS = ('linear', 'mask')
# official_zoo_ms: the released model's multi-scale value (official_zoo: its single-scale one)
REFERENCE_KINDS = ('seed_repo', 'official_zoo', 'official_zoo_ms', 'mmseg_zoo')
# The keys each mapping of a spec may hold: any other is refused on load (a typo such as
# `sha_256` would otherwise leave the weights silently unchecked)
TABLE_KEYS = ('table', 'title', 'dataset', 'rows')
ROW_KEYS = ('id', 'paper_row', 'model', 'backbone', 'pretrained', 'speed', 'patch_size',
            'decoder', 'crop_size', 'config', 'paper', 'matches', 'seed_curves', 'references')
PRETRAINED_KEYS = ('id', 'file', 'url', 'sha256')
SPEED_KEYS = ('seconds_per_iter', 'gpus', 'gpu', 'source')
PAPER_VALUE_KEYS = ('miou', 'source', 'confidence')
MATCHES_KEYS = ('version', 'reason')
REFERENCE_KEYS = ('miou', 'source')


# Table names and row ids become folder names, W&B run ids and names, and shell and --rows
# arguments: ASCII letters, digits, '.', '_', '-' (W&B ids forbid '/', ':', '#', '?', '%'; a
# comma would split --rows; a leading '-' reads as a flag). Display names (model, title) are
# free text and keep any Unicode.
IDENTIFIER = re.compile(r'[A-Za-z0-9][A-Za-z0-9._-]{0,63}')
IDENTIFIER_RULE = ("letters, digits, '.', '_' or '-', starting with a letter or digit, at most "
                   '64 characters: it becomes a folder, a W&B run id and a shell argument')


def _identifier(fields: '_Fields', field: str, value: str | None) -> str | None:
    if value is not None and not IDENTIFIER.fullmatch(value):
        fields.fail(field, f'{value!r} is not a usable identifier ({IDENTIFIER_RULE})')
    return value


def _relative_path(fields: '_Fields', field: str, value: str | None) -> str | None:
    """A path the spec gives relative to a root (a weights file, a release id that names a
    downloaded file): every part an identifier, so it stays under that root and is one shell
    word."""
    if value is not None and (Path(value).is_absolute() or not all(
            IDENTIFIER.fullmatch(part) for part in Path(value).parts)):
        fields.fail(field, f'{value!r} is not a relative path of identifiers ({IDENTIFIER_RULE})')
    return value


@dataclasses.dataclass(frozen=True)
class PaperValue:
    miou: float | None
    source: str | None
    confidence: str | None


@dataclasses.dataclass(frozen=True)
class Reference:
    miou: float
    source: str


@dataclasses.dataclass(frozen=True)
class Speed:
    """A measured training speed at the paper's total batch (8 images an iteration)."""
    seconds_per_iter: float
    gpus: int
    gpu: str  # the card it was measured on, e.g. 'A100-40GB'
    source: str  # where the number comes from (a job folder, a log)


@dataclasses.dataclass(frozen=True)
class Row:
    table: str
    id: str
    paper_row: int | None
    model: str
    backbone: str
    pretrained_id: str | None  # None: no public release matches; the user supplies the file
    pretrained_file: str
    patch_size: int
    decoder: str
    crop_size: int
    config: str  # path relative to the repository root
    paper: dict[str, PaperValue]
    references: dict[str, Reference]
    seed_curves: str | None = None  # file prefix in experiments/reference/seed_logs/
    pretrained_url: str | None = None  # None: no known download (user-supplied file)
    pretrained_sha256: str | None = None  # None: unknown, a download is not verified
    speed: Speed | None = None  # None: not measured
    spec_path: Path | None = None  # the spec file the row was read from
    # the paper version whose setup (weights, decoder) this row trains, and why: what the
    # report's delta and verdict are taken against by default
    matches: str | None = None
    matches_reason: str | None = None
    dataset: str = DEFAULT_DATASET  # the table's dataset (experiments/datasets.yaml)

    @property
    def data(self) -> Dataset:
        return datasets()[self.dataset]

    @property
    def config_path(self) -> Path:
        return REPO_ROOT / self.config

    @property
    def folder(self) -> str:
        """The folder of the row's table under a work root (see :func:`table_folder`)."""
        return table_folder(self.table, self.spec_path)


@dataclasses.dataclass(frozen=True)
class Table:
    name: str
    title: str
    rows: tuple[Row, ...]
    path: Path
    dataset: str = DEFAULT_DATASET

    @property
    def data(self) -> Dataset:
        return datasets()[self.dataset]

    @property
    def folder(self) -> str:
        return table_folder(self.name, self.path)

    def row(self, row_id: str) -> Row:
        for row in self.rows:
            if row.id == row_id:
                return row
        raise SpecError(f"table '{self.name}' has no row '{row_id}' "
                        f"(rows: {', '.join(r.id for r in self.rows)})")

    def select(self, row_ids: list[str] | None) -> list[Row]:
        return list(self.rows) if not row_ids else [self.row(r) for r in row_ids]


def table_folder(name: str, spec_path: Path | None) -> str:
    """A table's folder name (jobs, reports): its name for the spec in experiments/; for a spec
    given by path, the name, the file's stem and a digest of its path, so that jobs of another
    spec never share a folder, nor a finished result, with the default one's."""
    default = EXPERIMENTS / f'{name}.yaml'
    if spec_path is None or Path(spec_path).resolve() == default.resolve():
        return name
    path = Path(spec_path).resolve()
    return f'{name}-{path.stem}-{hashlib.sha1(str(path).encode()).hexdigest()[:8]}'


def table_arg(row: Row) -> str:
    """How a job process names the row's table: its name, or its spec file when it was read
    from elsewhere than experiments/ (a spec file passed by path)."""
    default = EXPERIMENTS / f'{row.table}.yaml'
    if row.spec_path is None or Path(row.spec_path).resolve() == default.resolve():
        return row.table
    return str(row.spec_path)


def available_tables() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS.glob('*.yaml') if p != DATASETS_FILE)


class _Fields:
    """Typed access to one mapping of a spec; every failure names file, row and field. With
    ``keys``, a key not among them is refused, the closest known one suggested."""

    def __init__(self, data: Any, where: str, prefix: str = '', keys: tuple[str, ...] = ()):
        self.where, self.prefix = where, prefix
        if not isinstance(data, dict):
            self.fail('', f'expected a mapping, got {type(data).__name__}')
        self.data = data
        for key in data if keys else ():
            if key not in keys:
                lower = {k.lower(): k for k in keys}  # `mIoU` is close to `miou`
                close = difflib.get_close_matches(str(key).lower(), lower, n=1, cutoff=0.5)
                self.fail(str(key), f"unknown key, did you mean '{lower[close[0]]}'?" if close
                          else f"unknown key, expected one of {', '.join(keys)}")

    def fail(self, field: str, why: str):
        name = f'{self.prefix}{field}' or self.prefix.rstrip('.') or '<row>'
        raise SpecError(f"{self.where}: field '{name}': {why}")

    def get(self, field: str, types, *, optional=False, choices=None):
        if field not in self.data:
            self.fail(field, 'missing')
        value = self.data[field]
        if value is None and optional:
            return None
        # bool is an int in Python; a spec value of true/false is never a number here
        if isinstance(value, bool) or not isinstance(value, types):
            names = types if isinstance(types, tuple) else (types,)
            want = ' or '.join(t.__name__ for t in names)
            self.fail(field, f"expected {want}{' or null' if optional else ''}, got {value!r}")
        if choices is not None and value not in choices:
            self.fail(field, f"expected one of {', '.join(map(str, choices))}, got {value!r}")
        return value

    def sub(self, field: str, keys: tuple[str, ...] = ()) -> '_Fields':
        if field not in self.data:
            self.fail(field, 'missing')
        return _Fields(self.data[field], self.where, f'{self.prefix}{field}.', keys)


def _miou(fields: _Fields, optional: bool) -> float | None:
    value = fields.get('miou', (int, float), optional=optional)
    if value is not None and not 0 < value <= 100:
        fields.fail('miou', f'expected an mIoU in (0, 100], got {value!r}')
    return None if value is None else float(value)


def _parse_row(data: Any, table: str, where: str, spec_path: Path | None = None,
               dataset: str = DEFAULT_DATASET) -> Row:
    f = _Fields(data, where, keys=ROW_KEYS)
    paper = {}
    papers = f.sub('paper', PAPER_VERSIONS)
    for version in PAPER_VERSIONS:
        pf = papers.sub(version, PAPER_VALUE_KEYS)
        miou = _miou(pf, optional=True)
        source = pf.get('source', str, optional=True)
        confidence = pf.get('confidence', str, optional=True, choices=CONFIDENCES)
        if (miou is None) != (source is None) or (miou is None) != (confidence is None):
            pf.fail('miou', 'a value needs a source and a confidence; an unknown value has neither')
        paper[version] = PaperValue(miou, source, confidence)
    references = {}
    rf = f.sub('references', REFERENCE_KINDS)
    for kind in rf.data:
        kf = rf.sub(kind, REFERENCE_KEYS)
        references[kind] = Reference(_miou(kf, optional=False), kf.get('source', str))
    pretrained = f.sub('pretrained', PRETRAINED_KEYS)
    url = pretrained.get('url', str, optional=True) if 'url' in pretrained.data else None
    if url is not None and not url.startswith(('https://', 'http://')):
        pretrained.fail('url', f'expected an http(s) URL, got {url!r}')
    sha256 = (pretrained.get('sha256', str, optional=True) if 'sha256' in pretrained.data
              else None)
    if sha256 is not None and not re.fullmatch(r'[0-9a-f]{64}', sha256):
        pretrained.fail('sha256', f'expected 64 lowercase hex digits or null, got {sha256!r}')
    speed = None
    if f.data.get('speed') is not None:
        sf = f.sub('speed', SPEED_KEYS)
        speed = Speed(float(sf.get('seconds_per_iter', (int, float))), sf.get('gpus', int),
                      sf.get('gpu', str), sf.get('source', str))
        if speed.seconds_per_iter <= 0 or speed.gpus < 1:
            sf.fail('seconds_per_iter', 'expected a positive time on at least one GPU')
    seed_curves = _identifier(f, 'seed_curves', f.get('seed_curves', str, optional=True)
                              if 'seed_curves' in f.data else None)
    if seed_curves and not (SEED_LOGS / f'{seed_curves}_eval.csv').is_file():
        f.fail('seed_curves', f'no {seed_curves}_eval.csv in experiments/reference/seed_logs')
    mf = f.sub('matches', MATCHES_KEYS)
    matches = mf.get('version', str, choices=PAPER_VERSIONS)
    matches_reason = mf.get('reason', str)
    config = f.get('config', str)
    if not (REPO_ROOT / config).is_file():
        f.fail('config', f'no such file: {config}')
    return Row(
        table=table,
        id=_identifier(f, 'id', f.get('id', str)),
        paper_row=f.get('paper_row', int, optional=True),
        model=f.get('model', str),
        backbone=f.get('backbone', str),
        pretrained_id=_relative_path(pretrained, 'id', pretrained.get('id', str, optional=True)),
        pretrained_file=_relative_path(pretrained, 'file', pretrained.get('file', str)),
        patch_size=f.get('patch_size', int, choices=(8, 16, 32)),
        decoder=f.get('decoder', str, choices=DECODERS),
        crop_size=f.get('crop_size', int),
        config=config,
        paper=paper,
        references=references,
        seed_curves=seed_curves,
        pretrained_url=url,
        pretrained_sha256=sha256,
        speed=speed,
        spec_path=spec_path,
        matches=matches,
        matches_reason=matches_reason,
        dataset=dataset,
    )


def load_table(name_or_path: str | Path) -> Table:
    """Load ``experiments/<name>.yaml`` (or a spec file by path) and validate every row."""
    path = Path(name_or_path)
    if path.suffix not in ('.yaml', '.yml'):
        path = EXPERIMENTS / f'{name_or_path}.yaml'
        if not path.is_file():
            raise SpecError(f"unknown table '{name_or_path}' "
                            f"(tables: {', '.join(available_tables())})")
    shown = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise SpecError(f'{shown}: cannot read spec: {str(err).splitlines()[0]}') from None
    top = _Fields(data, str(shown), keys=TABLE_KEYS)
    name = _identifier(top, 'table', top.get('table', str))
    data_name = top.get('dataset', str, choices=tuple(datasets()))
    rows_data = top.get('rows', list)
    rows, seen = [], set()
    for i, row_data in enumerate(rows_data):
        label = row_data.get('id') if isinstance(row_data, dict) else None
        where = f"{shown}: row {label!r}" if label else f'{shown}: row #{i + 1}'
        row = _parse_row(row_data, name, where, path, data_name)
        if row.id in seen:
            raise SpecError(f"{where}: field 'id': duplicate row id")
        seen.add(row.id)
        rows.append(row)
    if not rows:
        top.fail('rows', 'no rows')
    return Table(name=name, title=top.get('title', str), rows=tuple(rows), path=path,
                 dataset=data_name)


def select_rows(tables: list[Table], row_ids: list[str] | None) -> list[tuple[Table, list[Row]]]:
    """The rows of each table that ``row_ids`` name (all rows when None); with several tables,
    the ids may name rows of any of them, and each must name a row of one."""
    if len(tables) == 1 or not row_ids:
        return [(t, t.select(row_ids)) for t in tables]
    known = {row.id for t in tables for row in t.rows}
    unknown = [r for r in row_ids if r not in known]
    if unknown:
        raise SpecError(f"no row {', '.join(map(repr, unknown))} in tables "
                        f"{', '.join(t.name for t in tables)}")
    return [(t, [row for row in t.rows if row.id in row_ids]) for t in tables]
