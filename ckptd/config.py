"""Configuration: defaults < TOML file < CKPTD_* environment < CLI flags. Frozen dataclasses.

Environment keys: ``CKPTD_<SECTION>_<KEY>`` for tables (``CKPTD_DATABASE_URL``, ``CKPTD_WORKERS_COUNT``)
and ``CKPTD_WATCH_<N>_<KEY>`` for the N-th ``[[watch]]`` entry (``CKPTD_WATCH_0_ROOT``).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckptd.errors import ConfigError

ENV_PREFIX = "CKPTD_"
DTYPES = ("keep", "bf16", "fp16", "fp32")
LORA_MODES = ("merge", "adapter")
SCAN_MODES = ("auto", "events", "poll")
LOG_FORMATS = ("auto", "json", "console")


def default_state_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ckptd"


def default_database_url(environ: dict[str, str] | None = None) -> str:
    return f"sqlite:///{default_state_dir(environ) / 'ckptd.db'}"


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = field(default_factory=default_database_url)


@dataclass(frozen=True)
class WatchConfig:
    root: Path
    # Results at <output>/<experiment>/global_step_<N>; default: a sibling "<root>-hf" (never inside root).
    output: Path | None = None
    base_model: Path | None = None
    dtype: str | None = None  # None: the base config's torch_dtype
    lora: str = "merge"
    lora_config: Path | None = None
    max_depth: int = 4
    on_done: list[str] = field(default_factory=list)
    hook_timeout: float = 600.0

    @property
    def output_root(self) -> Path:
        return self.output or self.root.with_name(self.root.name + "-hf")


@dataclass(frozen=True)
class ScanConfig:
    interval: float = 30.0
    mode: str = "auto"
    settle_seconds: float = 10.0


@dataclass(frozen=True)
class WorkersConfig:
    count: int = 2
    lease_seconds: float = 120.0
    heartbeat_seconds: float = 20.0
    grace_seconds: float = 300.0
    poll_seconds: float = 2.0
    threads: int = 2
    max_shard_size: int = 5 * 1000**3
    memory_mb: int | None = None  # shards in flight per conversion (Megatron); None: 384 MiB


@dataclass(frozen=True)
class QueueConfig:
    max_attempts: int = 5
    backoff_base: float = 30.0
    backoff_cap: float = 3600.0
    reap_interval: float = 15.0


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "auto"


@dataclass(frozen=True)
class MetricsConfig:
    listen: str | None = None


@dataclass(frozen=True)
class DiskConfig:
    reserve_bytes: int = 10 * 1000**3
    recheck_seconds: float = 60.0  # how long a job held for disk space waits before it is tried again


@dataclass(frozen=True)
class Config:
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    watch: list[WatchConfig] = field(default_factory=list)
    scan: ScanConfig = field(default_factory=ScanConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    log: LogConfig = field(default_factory=LogConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    disk: DiskConfig = field(default_factory=DiskConfig)
    source: Path | None = None  # the file it was read from, if any


_TABLES: dict[str, type[Any]] = {
    "database": DatabaseConfig,
    "scan": ScanConfig,
    "workers": WorkersConfig,
    "queue": QueueConfig,
    "log": LogConfig,
    "metrics": MetricsConfig,
    "disk": DiskConfig,
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "dtype": DTYPES,
    "lora": LORA_MODES,
    "mode": SCAN_MODES,
    "format": LOG_FORMATS,
}


def _to_bool(value: Any) -> bool:
    return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")


def _to_number(kind: type[Any]) -> Any:
    def convert(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("boolean")
        return kind(value)

    return convert


def _to_path(value: Any) -> Path:
    return Path(os.path.expandvars(str(value))).expanduser()


def _to_list(value: Any) -> list[str]:
    items = value if isinstance(value, list) else _split_env_list(str(value))
    return [str(item) for item in items]


_CONVERTERS: dict[Any, Any] = {
    bool: _to_bool,
    int: _to_number(int),
    float: _to_number(float),
    Path: _to_path,
    str: str,
    list: _to_list,
}


def _coerce(where: str, hint: Any, value: Any) -> Any:
    """Coerce a TOML or environment value to the field's annotated type; errors name the field."""
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        if value is None or value == "":
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    convert = _CONVERTERS.get(typing.get_origin(hint) or hint)
    if convert is None:
        raise ConfigError(f"{where}: unsupported value {value!r}")
    try:
        return convert(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected {getattr(hint, '__name__', hint)}, got {value!r}") from None


def _split_env_list(text: str) -> list[str]:
    import shlex

    return shlex.split(text)


def _build(cls: type[Any], where: str, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key; known keys: {', '.join(sorted(known))}")
    kwargs: dict[str, Any] = {}
    for name, raw in values.items():
        field_where = f"{where}.{name}"
        value = _coerce(field_where, hints[name], raw)
        choices = _CHOICES.get(name)
        if choices and value is not None and value not in choices:
            raise ConfigError(f"{field_where}: {value!r} is not one of {', '.join(choices)}")
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError as exc:
        missing = str(exc).rsplit(":", 1)[-1].strip().strip("'")
        raise ConfigError(f"{where}.{missing}: required") from None


def _env_overrides(environ: dict[str, str], data: dict[str, Any]) -> None:
    watches: list[dict[str, Any]] = data.setdefault("watch", [])
    for key, value in sorted(environ.items()):
        if not key.startswith(ENV_PREFIX) or key == "CKPTD_CONFIG":
            continue
        parts = key[len(ENV_PREFIX) :].lower().split("_", 1)
        if len(parts) != 2:
            continue
        section, rest = parts
        if section == "watch":
            index_text, _, name = rest.partition("_")
            if not index_text.isdigit() or not name:
                raise ConfigError(f"{key}: use CKPTD_WATCH_<N>_<KEY>, e.g. CKPTD_WATCH_0_ROOT")
            index = int(index_text)
            while len(watches) <= index:
                watches.append({})
            watches[index][name] = value
        elif section in _TABLES:
            data.setdefault(section, {})[rest] = value


def _validate(config: Config) -> Config:
    if config.workers.count < 0:
        raise ConfigError("workers.count: must be >= 0")
    if config.scan.interval <= 0:
        raise ConfigError("scan.interval: must be > 0 seconds")
    if config.workers.heartbeat_seconds * 2 > config.workers.lease_seconds:
        raise ConfigError("workers.heartbeat_seconds: must be at most half of workers.lease_seconds")
    for i, watch in enumerate(config.watch):
        out = watch.output_root.absolute()
        if "checkpoints" in out.parts:
            raise ConfigError(f"watch[{i}].output: {out} is inside a checkpoints/ folder; trainers glob it")
        if out.is_relative_to(watch.root.absolute()):
            raise ConfigError(f"watch[{i}].output: {out} is inside the watched root {watch.root}")
    return config


def find_config_file(explicit: Path | None, environ: dict[str, str]) -> Path | None:
    if explicit is not None:
        return explicit
    if environ.get("CKPTD_CONFIG"):
        return Path(environ["CKPTD_CONFIG"])
    xdg = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    for candidate in (Path(xdg) / "ckptd" / "ckptd.toml", Path("/etc/ckptd/ckptd.toml")):
        if candidate.is_file():
            return candidate
    return None


def load_config(
    path: Path | None = None, environ: dict[str, str] | None = None, overrides: dict[str, Any] | None = None
) -> Config:
    """Read the TOML file (if any), apply CKPTD_* environment keys and ``overrides`` (CLI flags)."""
    environ = dict(os.environ if environ is None else environ)
    source = find_config_file(path, environ)
    data: dict[str, Any] = {}
    if source is not None:
        try:
            data = tomllib.loads(source.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{source}: config file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    _env_overrides(environ, data)
    data.setdefault("database", {}).setdefault("url", default_database_url(environ))
    for section, values in (overrides or {}).items():
        data.setdefault(section, {}).update(values)
    unknown = sorted(set(data) - set(_TABLES) - {"watch"})
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown section; known: {', '.join(sorted([*_TABLES, 'watch']))}")
    sections = {name: _build(cls, name, data.get(name, {})) for name, cls in _TABLES.items()}
    watches = [_build(WatchConfig, f"watch[{i}]", entry) for i, entry in enumerate(data.get("watch", []))]
    return _validate(Config(watch=watches, source=source, **sections))
