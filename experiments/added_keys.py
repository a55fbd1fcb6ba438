"""Refuse a ``+key=value`` override that adds an option the script does not read: a hydra
callback each script's config lists under ``hydra.callbacks`` (:class:`AddedKeyGuard`), beside
the run-dir guard (:mod:`run_dir`). Beside the scripts (their folder is on ``sys.path``).
"""

from __future__ import annotations

import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


def _has_key(config: DictConfig, key: str) -> bool:
    """Whether ``config`` has ``key`` (dotted), whatever its value (``???`` too)."""
    from omegaconf import OmegaConf

    parent, _, name = key.rpartition(".")
    node = OmegaConf.select(config, parent, throw_on_missing=False) if parent else config
    return isinstance(node, DictConfig) and name in list(node)  # `in node` is False for ???


def _composed(config: DictConfig, overrides: list[str]) -> DictConfig | None:
    """The script's config composed again with ``overrides`` alone, or None where it cannot be
    (no primary config folder recorded, or the overrides do not compose without the others)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    name = config.hydra.job.config_name
    try:
        if GlobalHydra.instance().is_initialized():  # inside the script's own hydra.main
            return compose(name, overrides=overrides, return_hydra_config=True)
        folder = next(s.path for s in config.hydra.runtime.config_sources
                      if s.provider == "main" and s.schema == "file")  # fmt: skip
        with initialize_config_dir(config_dir=folder, version_base="1.3"):
            return compose(name, overrides=overrides, return_hydra_config=True)
    except (StopIteration, HydraException, OmegaConfBaseException, ValueError):
        return None


class AddedKeyGuard(Callback):
    """Refuse a ``+key=value`` (or ``++key=value``) override that adds an option the script does
    not read.

    Hydra's own hint for a misspelled key (``Key 'warm_up' is not in struct``) is "To append to
    your config use +stages.sft.warm_up=1"; followed, the run went on without the option. A key
    may be added only where the script passes options on to what checks them (``open``: patterns
    such as ``algo.*``, SB3's constructor; ``env.task_kwargs.*``, the task's).

    Args:
        script: the script's name, which starts its message.
        open: ``fnmatch`` patterns of the keys that may be added.
    """

    def __init__(self, script: str, open: list[str] | None = None) -> None:
        self.script = script
        self.open = [str(p) for p in open or []]

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.types import RunMode

        if config.hydra.mode == RunMode.MULTIRUN:  # a single run was checked by on_run_start
            self._check(config)

    def _check(self, config: DictConfig) -> None:
        import fnmatch

        from omegaconf import OmegaConf

        overrides = list(config.hydra.overrides.task)
        forced = [o for o in overrides if o.startswith("++")]
        # ++key=value sets an option or, where there is none, adds it (hydra's own hint for a +
        # on a key that exists): which it did is read from the config composed without them
        before = _composed(config, [o for o in overrides if o not in forced]) if forced else None
        for override in overrides:
            if not override.startswith("+"):
                continue
            key = override.lstrip("+").split("=", 1)[0]
            if any(fnmatch.fnmatchcase(key, pattern) for pattern in self.open):
                continue
            if override in forced and (before is None or _has_key(before, key)):
                continue  # it set an option the script has (or the check could not tell)
            parent, _, name = key.rpartition(".")
            around = OmegaConf.select(config, parent) if parent else config
            known = sorted(k for k in around if k not in (name, "hydra")) if isinstance(
                around, DictConfig) else []  # fmt: skip
            where = f" under {parent}" if parent else ""
            sys.exit(
                f"{self.script}: ConfigKeyError: {override} adds {key}, an option "
                f"{self.script} does not read (a misspelled option would be ignored); the "
                f"options{where} are {known}"
            )
