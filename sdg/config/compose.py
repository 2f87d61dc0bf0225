"""Compose the Hydra config from `conf/` plus `key=value` overrides, with errors a person can act on."""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sdg.config.checks import check_values
from sdg.config.schema import SdgConfig
from sdg.errors import ConfigError

__all__ = ["CONFIG_MODULE", "CONFIG_NAME", "check_values", "compose_config", "to_object", "valid_keys"]

CONFIG_MODULE = "sdg.conf"
CONFIG_NAME = "config"


def valid_keys(dotted: str) -> tuple[str, list[str]]:
    """The deepest known section on `dotted`'s path and the keys it accepts."""
    cls: Any = SdgConfig
    section: list[str] = []
    for part in dotted.split(".")[:-1]:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        sub = fields.get(part)
        if sub is None or not dataclasses.is_dataclass(sub.default_factory if sub.default_factory is not dataclasses.MISSING else None):
            break
        cls = sub.default_factory
        section.append(part)
    return ".".join(section) or "<top level>", [f.name for f in dataclasses.fields(cls)]


def _field_type(dotted: str) -> Any:
    """The declared type's origin of a config field (`dict` for mapping fields), or None."""
    import typing

    cls: Any = SdgConfig
    for part in dotted.split("."):
        fields = {f.name: f for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
        f = fields.get(part)
        if f is None:
            return None
        hints = typing.get_type_hints(cls)
        cls = hints.get(part)
    return typing.get_origin(cls) or cls


def _explain(exc: Exception) -> str:
    cause = exc.__cause__
    text = " ".join(str(e) for e in (exc, cause) if e is not None and str(e).strip())
    override = re.search(r"Could not override '([^']+)'", text)
    missing_key = re.search(r"Key '([^']+)' (?:is )?not in", text)
    if missing_key:
        key = override.group(1) if override else missing_key.group(1)
        parent = _field_type(key.rsplit(".", 1)[0]) if "." in key else None
        if parent is dict:
            return (f"'{key.rsplit('.', 1)[0]}' is a mapping: add entries with "
                    f"+{key}=VALUE (the leading + adds a key)")
        section, keys = valid_keys(key)
        return f"unknown config key '{key}': {section} accepts {', '.join(keys)}"
    group = re.search(r"Could not find '([^'/]+)/([^']+)'", text)
    if group:
        options = re.findall(r"^\t(\S+)$", str(exc), flags=re.M)
        return f"unknown {group.group(1)} '{group.group(2)}': choose one of {', '.join(options) or '(none)'}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return "invalid configuration: " + " ".join(lines[:3])


def _reject_unknown(node: Any, cls: Any, prefix: str) -> None:
    """`+key=value` slips past struct mode; every key must still be a field of its dataclass."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in node:
        dotted = f"{prefix}{key}"
        if key not in fields:
            section, keys = valid_keys(dotted)
            raise ConfigError(f"unknown config key '{dotted}': {section} accepts {', '.join(keys)}")
        factory = fields[key].default_factory
        if factory is not dataclasses.MISSING and dataclasses.is_dataclass(factory) and isinstance(node[key], DictConfig):
            _reject_unknown(node[key], factory, dotted + ".")


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The composed, typed config; raises ConfigError naming the bad key and the valid ones, or every
    value out of its range (sdg.config.checks)."""
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base=None):
            cfg = compose(config_name=CONFIG_NAME, overrides=list(overrides))
        OmegaConf.resolve(cfg)
        _reject_unknown(cfg, SdgConfig, "")
        check_values(cfg)  # ranges and choices (sdg/config/checks.py); multirun jobs call it on their own config
        return cfg
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise ConfigError(_explain(exc)) from None
    finally:
        GlobalHydra.instance().clear()


def to_object(cfg: DictConfig) -> SdgConfig:
    """The config as the typed dataclass tree."""
    return OmegaConf.to_object(cfg)  # type: ignore[return-value]
