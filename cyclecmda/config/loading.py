"""Loading a config: schema <- YAML file(s) <- ``key=value`` overrides, with errors that name the
key and what would be valid; writing it back as YAML."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union, cast

import yaml
from omegaconf import DictConfig, ListConfig, Node, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cyclecmda.config import schema
from cyclecmda.config.checks import validate
from cyclecmda.config.schema import Config
from cyclecmda.errors import ConfigError, did_you_mean
from cyclecmda.files import atomic_write


def _schema_node(path: str) -> Any:
    """The dataclass type at a dotted path of the schema (None if the path is not a section)."""
    node: Any = Config
    for part in [p for p in path.split(".") if p]:
        if not dataclasses.is_dataclass(node):
            return None
        fields = {f.name: f for f in dataclasses.fields(node)}
        if part not in fields:
            return None
        node = fields[part].type
        if isinstance(node, str):  # postponed annotations
            node = _resolve_type(node)
    return node


def _resolve_type(name: str) -> Any:
    return getattr(schema, name, None)


def _field_type(key: str) -> Any:
    """The type annotation of a dotted key of the schema (None if there is no such key)."""
    section, _, name = key.rpartition(".")
    node = _schema_node(section)
    if node is None or not dataclasses.is_dataclass(node):
        return None
    return typing.get_type_hints(node).get(name)


def _expected(hint: Any) -> str:
    """What a value of this type looks like, in words."""
    if typing.get_origin(hint) is Union:
        hint = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
    origin = typing.get_origin(hint)
    if origin in (list, List):
        return "a list, e.g. [a,b] ([] for an empty one)"
    if origin in (dict, Dict):
        return "a mapping of keys to values"
    if dataclasses.is_dataclass(hint):
        return f"a section of keys ({', '.join(f.name for f in dataclasses.fields(hint))})"
    return {str: "text", int: "an integer", float: "a number",
            bool: "true or false"}.get(hint, "a value")


def _is_scalar_list(hint: Any) -> bool:
    if typing.get_origin(hint) is Union:  # Optional[List[str]]
        hint = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
    args = typing.get_args(hint)
    return typing.get_origin(hint) in (list, List) and len(args) == 1 and args[0] in (str, int, float, bool)


def _valid_keys(section: str) -> List[str]:
    node = _schema_node(section)
    if node is None or not dataclasses.is_dataclass(node):
        return []
    return [f.name for f in dataclasses.fields(node)]


OVERRIDES = "command-line override"  # the source that errors of key=value arguments name


def _translate(exc: OmegaConfBaseException, source: str) -> ConfigError:
    """Turn an OmegaConf exception into a ConfigError that names the key and valid keys."""
    full_key = str(getattr(exc, "full_key", "") or "")
    where = f" (in {source})" if source else ""
    msg = str(getattr(exc, "msg", "") or exc).split("\n")[0]
    value = getattr(exc, "value", "")
    empty = value is None or isinstance(value, Node) and value._is_none()
    if empty and ("Incompatible value 'None'" in msg or "is not Optional" in msg):
        # `key=` on the command line, or `key:` with nothing after it in YAML
        hint = _field_type(full_key)
        text = ""
        if hint is str:
            quoted = f"""'{full_key}=""'""" if source == OVERRIDES else '""'
            text = f"; for empty text write {quoted}"
        return ConfigError(f"config key '{full_key}' has an empty value{where}; it expects {_expected(hint)}{text}.")
    if "is not a ListConfig" in msg:
        # `key: shape` in YAML (or a stored config) where the key takes a list
        shown = value._value() if isinstance(value, Node) else value
        return ConfigError(f"config key '{full_key}'{where} expects {_expected(_field_type(full_key))}, not {shown!r}; "
                           f"for a list of one write [{shown}].")
    if "not in struct" in msg or "Key '" in msg and "not in" in msg:
        section, _, key = full_key.rpartition(".")
        valid = _valid_keys(section)
        place = f"section '{section}'" if section else "the top level"
        return ConfigError(
            f"unknown config key '{full_key}'{where}; valid keys in {place}: "
            f"{', '.join(valid)}." + did_you_mean(key, valid)
        )
    return ConfigError(f"invalid value for config key '{full_key}'{where}: {msg}")


def _parse_overrides(overrides: Sequence[str]) -> DictConfig:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.max_steps=100).")
    merged: Any = OmegaConf.create()
    for item in overrides:
        key, value = item.split("=", 1)
        bare = value.strip() and not value.lstrip().startswith("[") and value.strip() not in ("null", "Null", "NULL", "~")
        if bare and _is_scalar_list(_field_type(key)):
            item = f"{key}=[{value}]"  # a comma-separated list: data.mask_classes=background,person
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([item]))
        except (yaml.YAMLError, OmegaConfBaseException) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"override {item!r}: the value {value!r} of '{key}' is not valid YAML ({reason}); "
                f"to pass it as text, quote it inside the shell's quotes: '{key}=\"{value}\"'."
            ) from None
    return merged


def _read_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        if _looks_like_key(str(path)):
            raise ConfigError(_missing_equals(str(path)))
        raise ConfigError(f"config file '{path}' does not exist.")
    try:
        loaded = OmegaConf.load(path)
    except (yaml.YAMLError, OmegaConfBaseException) as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML: {exc}") from None
    if loaded is None or isinstance(loaded, ListConfig):
        raise ConfigError(f"config file '{path}' must hold a mapping of sections (run, data, model, ...).")
    return loaded


def load_config(
    paths: Sequence[Union[str, Path]] = (), overrides: Sequence[str] = ()
) -> Config:
    """Merge schema <- each YAML file in order <- ``key=value`` overrides, then validate."""
    merged = OmegaConf.structured(Config)
    for p in paths:
        try:
            merged = OmegaConf.merge(merged, _read_yaml(Path(p)))
        except OmegaConfBaseException as exc:
            raise _translate(exc, str(p)) from None
    if overrides:
        try:
            merged = OmegaConf.merge(merged, _parse_overrides(overrides))
        except OmegaConfBaseException as exc:
            raise _translate(exc, OVERRIDES) from None
    try:
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise _translate(exc, "") from None
    assert isinstance(cfg, Config)
    return validate(cfg)


def config_from_dict(data: Dict[str, Any]) -> Config:
    """Rebuild a validated Config from a plain dict (as stored in checkpoints and exports)."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(data))
        cfg = cast(Config, OmegaConf.to_object(merged))
    except OmegaConfBaseException as exc:
        raise _translate(exc, "stored config") from None
    # no registry check: stored networks are rebuilt from their own specs, and exports need no registry
    return validate(cfg, networks=False)


def to_dict(cfg: Any) -> Dict[str, Any]:
    """Plain nested dict of a Config (or any section of it)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: Config, path: Union[str, Path]) -> Path:
    """Write the resolved config as YAML; ``load_config([path])`` gives it back unchanged."""
    text = to_yaml(cfg)
    return atomic_write(path, lambda tmp: tmp.write_text(text))


_CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def split_cli_args(args: Sequence[str]) -> tuple[List[str], List[str]]:
    """Separate YAML paths from ``key=value`` overrides in a command line.

    An argument that is no file but reads as a config key (``train.max_steps 10``) raises
    ConfigError: an override whose '=' is missing.
    """
    for i, arg in enumerate(args):
        if "=" not in arg and not Path(arg).is_file() and _looks_like_key(arg):
            value = args[i + 1] if i + 1 < len(args) else None
            if value is not None and ("=" in value or value.endswith(_CONFIG_SUFFIXES) or _looks_like_key(value)):
                value = None  # the next argument is not this key's value
            raise ConfigError(_missing_equals(arg, value))
    paths = [a for a in args if "=" not in a]
    overrides = [a for a in args if "=" in a]
    return paths, overrides


def _looks_like_key(text: str) -> bool:
    """Whether `text` reads as a dotted config key (or a top-level section), not a file name."""
    parts = text.split(".")
    return (not text.endswith(_CONFIG_SUFFIXES) and parts[0] in _valid_keys("")
            and all(re.fullmatch(r"[A-Za-z_]\w*", p) for p in parts))


def _missing_equals(key: str, value: Optional[str] = None) -> str:
    example = f"{key}={value if value is not None else 'VALUE'}" if "." in key else f"{key}.KEY=VALUE"
    return f"'{key}' is not a config file: it looks like a key=value override missing '='; did you mean {example}?"
