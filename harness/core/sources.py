"""A row's recipe sources fingerprint: what the checkout holds that a row's recipe is built
from (the row's recipe fields in its spec, its config file and the project's configs it
inherits, read as code so a comment changes nothing, and the mmseg release whose base configs
they name). Computed without mmengine, so that ``report`` and ``status`` can tell a job that
ran another recipe; ``verify`` compares the effective configs themselves."""
from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import json
from pathlib import Path

from .spec import Row

# the row's fields that decide its recipe (the paper values and references do not)
RECIPE_FIELDS = ('id', 'backbone', 'pretrained_file', 'patch_size', 'decoder', 'crop_size',
                 'config')


def _config_chain(path: Path, seen: set[Path]) -> list[str]:
    """The parsed text of a config file and of the project's configs it inherits."""
    path = path.resolve()
    if path in seen or not path.is_file():
        return []
    seen.add(path)
    tree = ast.parse(path.read_text())
    parts = [ast.dump(tree)]
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == '_base_' for t in node.targets):
            try:
                bases = ast.literal_eval(node.value)
            except ValueError:
                continue
            for base in [bases] if isinstance(bases, str) else bases:
                if '::' not in base:  # mmseg's own bases are named by its version below
                    parts += _config_chain(path.parent / base, seen)
    return parts


def recipe_sources(row: Row) -> str:
    """16 hex digits naming the sources ``row``'s recipe is built from."""
    try:
        mmseg = importlib.metadata.version('mmsegmentation')
    except importlib.metadata.PackageNotFoundError:
        mmseg = None
    data = {'row': {f: getattr(row, f) for f in RECIPE_FIELDS}, 'mmseg': mmseg,
            'configs': _config_chain(row.config_path, set())}
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
