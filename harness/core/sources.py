"""What a job's numbers are built from, named by hashes that any machine computes alike.

- The **recipe sources** of a row: its recipe fields in the spec and its config file with the
  project's configs it inherits (mmseg's own bases are named by the mmseg version the job
  records, compared with the pins).
- The **code identity**: the harness modules that decide numbers (:data:`NUMBER_CODE`) and the
  row's config chain, file by file, with the package versions of the job's process.

Both hash each file's text with its comments, docstrings and blank lines taken out, located by
their positions (``tokenize`` and ``ast`` line numbers, which no CPython release changes), never
``ast.dump`` (whose output does), and neither looks up the reading machine's packages: a report
built on a laptop from job folders copied off a cluster decides as the cluster would.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import io
import json
import re
import tokenize
from pathlib import Path

from .errors import SpecError
from .layout import REPO_ROOT
from .spec import Row

# the row's fields that decide its recipe (the paper values and references do not)
RECIPE_FIELDS = ('id', 'backbone', 'pretrained_file', 'patch_size', 'decoder', 'crop_size',
                 'config')
# The harness modules a job's numbers depend on: the model, the job config, the code inside the
# Runner that changes what is computed (data order, precision, metrics, RNG restored at a
# resume), the profiles' sizes and the smoke data. The rest (launchers, reports, W&B, logging,
# checkpoint writing, hashing) cannot change a number; tests/test_record.py checks every module
# of these packages is named in one of the two lists.
NUMBER_CODE = ('harness.models.*', 'harness.prepare.job_config', 'harness.prepare.model',
               'harness.runtime.metrics', 'harness.runtime.precision', 'harness.runtime.preempt',
               'harness.runtime.sampling', 'harness.core.profiles', 'harness.assets.synthetic')
NOT_NUMBER_CODE = ('harness.prepare.__init__', 'harness.prepare.fingerprint',
                   'harness.prepare.mmengine_patch', 'harness.runtime.__init__',
                   'harness.runtime.checkpointing', 'harness.runtime.progress',
                   'harness.runtime.safe_resume', 'harness.runtime.wandb_backend')
# the packages whose release is part of a job's code identity (python and numpy are recorded in
# the history, not compared)
CODE_PACKAGES = ('torch', 'mmcv', 'mmengine', 'mmsegmentation')
# how recipe sources are computed: a job frozen by an older harness (ast.dump, the installed mmseg)
# recorded sources that cannot be compared with these
SOURCES_FORMAT = 2
REQUIREMENTS = (REPO_ROOT / 'requirements.txt', REPO_ROOT / 'requirements-post.txt')


def stripped_source(path: Path) -> str:
    """``path``'s Python text without comments, docstrings, blank lines or trailing spaces;
    SpecError naming the file and line when it does not parse."""
    path = Path(path)
    try:
        text = path.read_text()
        tree = ast.parse(text, filename=str(path))
        comments = [tok for tok in tokenize.generate_tokens(io.StringIO(text).readline)
                    if tok.type == tokenize.COMMENT]
    except SyntaxError as err:
        raise SpecError(f'{path} does not parse (line {err.lineno}: {err.msg})') from None
    except (tokenize.TokenError, UnicodeDecodeError, OSError) as err:
        raise SpecError(f'{path} cannot be read as Python ({err})') from None
    lines = text.splitlines()
    for tok in reversed(comments):  # one comment a line, at its end
        (row, col), _ = tok.start, tok.end
        lines[row - 1] = lines[row - 1][:col]
    dropped = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) \
                and node.body and isinstance(node.body[0], ast.Expr) \
                and isinstance(node.body[0].value, ast.Constant) \
                and isinstance(node.body[0].value.value, str):
            doc = node.body[0]
            if len(node.body) > 1:  # a body of a docstring alone keeps it: it is the body
                dropped.update(range(doc.lineno, doc.end_lineno + 1))
    kept = [line.rstrip() for k, line in enumerate(lines, 1) if k not in dropped]
    return '\n'.join(line for line in kept if line.strip())


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _bases(path: Path) -> list[Path]:
    """The project's config files ``path`` inherits (``_base_`` with relative paths)."""
    found = []
    for node in ast.parse(path.read_text(), filename=str(path)).body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == '_base_' for t in node.targets):
            try:
                bases = ast.literal_eval(node.value)
            except ValueError:
                continue
            for base in [bases] if isinstance(bases, str) else bases:
                if '::' not in base:  # mmseg's own bases are named by its version
                    found.append((path.parent / base).resolve())
    return found


def config_chain(path: Path) -> list[Path]:
    """A config file and the project's configs it inherits, depth first, each once;
    SpecError when one of them is missing or does not parse."""
    chain, todo = [], [Path(path).resolve()]
    while todo:
        current = todo.pop(0)
        if current in chain:
            continue
        if not current.is_file():
            raise SpecError(f'config {current} does not exist')
        stripped_source(current)  # one line naming the file when it does not parse
        chain.append(current)
        todo = _bases(current) + todo
    return chain


def _name(path: Path) -> str:
    """A file's name in a record: relative to the checkout where it lies inside it."""
    try:
        return Path(path).resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return Path(path).name


def recipe_sources(row: Row) -> str:
    """16 hex digits naming the sources ``row``'s recipe is built from (its recipe fields and
    its config chain); SpecError naming the row and the file when a config does not parse."""
    try:
        configs = [stripped_source(p) for p in config_chain(row.config_path)]
    except SpecError as err:
        raise SpecError(f'{row.table}/{row.id}: {err}') from None
    data = {'row': {f: getattr(row, f) for f in RECIPE_FIELDS}, 'configs': configs}
    return _digest(json.dumps(data, sort_keys=True, default=str))[:16]


def module_files(patterns) -> list[Path]:
    """The files of dotted module names (``*``: every module of a package)."""
    return sorted({p for pattern in patterns
                   for p in REPO_ROOT.glob(pattern.replace('.', '/') + '.py')})


def number_code_files() -> list[Path]:
    return module_files(NUMBER_CODE)


@functools.lru_cache(maxsize=None)
def _stripped_digest(path: Path, size: int, mtime_ns: int) -> str:
    return _digest(stripped_source(path))[:16]


def _file_hashes(files: list[Path]) -> dict[str, str]:
    """Each file's stripped-text hash, once per file version in a process (a report hashes
    the harness modules for every row)."""
    hashes = {}
    for path in files:
        stat = Path(path).stat()
        hashes[_name(path)] = _stripped_digest(Path(path), stat.st_size, stat.st_mtime_ns)
    return hashes


def code_files(row: Row) -> dict[str, str]:
    """SHA-256 (16 hex digits) of each file that decides ``row``'s numbers, by its name."""
    try:
        return {**_file_hashes(number_code_files()), **_file_hashes(config_chain(row.config_path))}
    except SpecError as err:
        raise SpecError(f'{row.table}/{row.id}: {err}') from None


def code_identity(row: Row, versions: dict | None) -> dict:
    """The code identity of a job of ``row``: each number-deciding file's hash, the packages
    of :data:`CODE_PACKAGES` as ``versions`` gives them (the job's own process), and one hash
    of both."""
    files = code_files(row)
    packages = {name: (versions or {}).get(name) for name in CODE_PACKAGES}
    whole = _digest(json.dumps({'files': files, 'packages': packages}, sort_keys=True))[:16]
    return {'sha256': whole, 'files': files, 'packages': packages}


def code_differences(old: dict | None, new: dict | None) -> list[str]:
    """What differs between two code identities: file names, then ``package a -> b``."""
    if not old or not new:
        return ['code identity unknown']
    files_a, files_b = old.get('files') or {}, new.get('files') or {}
    found = [name for name in sorted(set(files_a) | set(files_b))
             if files_a.get(name) != files_b.get(name)]
    pkgs_a, pkgs_b = old.get('packages') or {}, new.get('packages') or {}
    found += [f'{name} {pkgs_a.get(name)} -> {pkgs_b.get(name)}'
              for name in CODE_PACKAGES if pkgs_a.get(name) != pkgs_b.get(name)]
    return found


def pinned_versions() -> dict[str, str]:
    """The releases ``requirements*.txt`` pin with ``==`` (``wandb==0.31.*`` is a range)."""
    pins = {}
    for path in REQUIREMENTS:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            found = re.fullmatch(r'\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;#*]+)\s*(#.*)?', line)
            if found:
                pins[found.group(1).lower()] = found.group(2)
    return pins


def off_pins(packages: dict | None) -> list[str]:
    """The packages of a job's code identity whose recorded release is not the pinned one
    (a local build suffix such as ``+cpu`` aside)."""
    pins = pinned_versions()
    found = []
    for name in CODE_PACKAGES:
        pinned, ran = pins.get(name), (packages or {}).get(name)
        if pinned is not None and (ran or '').split('+')[0] != pinned:
            found.append(f'{name} {ran} (pinned {pinned})')
    return found
