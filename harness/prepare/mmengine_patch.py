"""Patches mmengine when imported: the one place the harness changes mmengine's own behaviour
(docs/design.md, "The mmengine patch"). All three save time and change no result.

mmengine resolves each ``mmseg::`` base by first searching mmseg's model metafiles for a model
config of that name; for ``_base_/`` files that search always fails, and mmengine then takes the
file from the package's config folder: it is failed at once here. mmengine also formats a
config's text with yapf each time it prints or dumps it, several times over the same text at a
job's start: the formatted text is kept for the same input. And it asks whether mmseg is
installed once per ``mmseg::`` base, each time reloading ``pkg_resources`` (and printing its
deprecation notice again): the answer is kept for the process.
"""
from __future__ import annotations

import functools

from mmengine.config import config as config_module


def find_base_configs_directly() -> None:
    """Make mmengine take ``mmseg::_base_/`` files from mmseg's config folder without the
    metafile search (idempotent)."""
    if getattr(config_module._get_external_cfg_path, 'skips_bases', False):
        return
    search = config_module._get_external_cfg_path

    def external_cfg_path(package_path: str, cfg_file: str) -> str:
        if cfg_file.startswith('_base_/'):
            raise ValueError(cfg_file)  # what mmengine's search raises: use the config folder
        return search(package_path, cfg_file)

    external_cfg_path.skips_bases = True
    external_cfg_path.__wrapped__ = search
    config_module._get_external_cfg_path = external_cfg_path


def format_each_config_text_once() -> None:
    """Make mmengine's yapf call return the kept result for a text it formatted before
    (idempotent). yapf is a pure function of the text and the style."""
    if getattr(config_module.FormatCode, 'kept', False):
        return
    format_code = config_module.FormatCode

    @functools.lru_cache(maxsize=8)
    def formatted(text: str, style: tuple, options: tuple):
        return format_code(text, style_config=dict(style), **dict(options))

    def format_kept(text, style_config=None, **options):
        return formatted(text, tuple(sorted((style_config or {}).items())),
                         tuple(sorted(options.items())))

    format_kept.kept = True
    format_kept.cache_info = formatted.cache_info
    format_kept.__wrapped__ = format_code
    config_module.FormatCode = format_kept


def ask_whether_installed_once() -> None:
    """Keep mmengine's answer to "is this package installed" for the process (idempotent)."""
    if hasattr(config_module.is_installed, 'cache_info'):
        return
    config_module.is_installed = functools.lru_cache(maxsize=None)(config_module.is_installed)


find_base_configs_directly()
format_each_config_text_once()
ask_whether_installed_once()
