"""Patches mmengine when imported: the one place the harness changes mmengine's own behaviour
(docs/design.md, "The mmengine patch"). Both save time and change no result.

mmengine resolves each ``mmseg::`` base by first searching mmseg's model metafiles for a model
config of that name; for ``_base_/`` files that search always fails, and mmengine then takes the
file from the package's config folder: it is failed at once here. mmengine also asks whether
mmseg is installed once per ``mmseg::`` base, each time reloading ``pkg_resources`` (and
printing its deprecation notice again): the answer is kept for the process.
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


def ask_whether_installed_once() -> None:
    """Keep mmengine's answer to "is this package installed" for the process (idempotent)."""
    if hasattr(config_module.is_installed, 'cache_info'):
        return
    config_module.is_installed = functools.lru_cache(maxsize=None)(config_module.is_installed)


find_base_configs_directly()
ask_whether_installed_once()
