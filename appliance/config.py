"""The appliance's configuration: one TOML file read into dataclasses, then environment, then flags.

This is the only place the TOML file and the `APPLIANCE_*` environment variables are read. Every other
module receives an `ApplianceConfig`. Errors name the offending key, e.g. `server.port`.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

DEFAULT_CONFIG_PATH: Final = Path("/etc/appliance/config.toml")
SHIPPED_BUNDLES: Final = Path(__file__).resolve().parent / "bundles"
"""The NPU bundles shipped with the code (the default voice's, for rk3588). In a checkout `appliance/bundles` is a
link to `models/rknn`, where the converter writes; a wheel carries the files themselves, so every entry point
(installed or not) finds them at the same place beside this module."""
ENV_PREFIX: Final = "APPLIANCE_"


class ConfigError(ValueError):
    """A configuration value is missing, unknown or of the wrong type; the message names the key."""


@dataclass(frozen=True)
class ServerConfig:
    host: str = "0.0.0.0"
    """Address of the LAN listener."""
    port: int = 8848
    """Port of the LAN listener."""
    max_text_chars: int = 10_000
    """Longest text accepted in one request or one WebSocket utterance."""
    max_ws_message_bytes: int = 64 * 1024
    """Largest WebSocket message accepted from a client."""
    lan_token_required: bool = False
    """Ask LAN clients for the bearer token too (the tunnel listener always does)."""
    max_connections: int = 256
    """Open connections on the LAN listener; more are answered 503 and closed (the tunnel has its own cap)."""
    idle_timeout_s: float = 10.0
    """A connection must send complete request headers within this, and may idle this long between requests
    (both listeners)."""
    body_timeout_s: float = 10.0
    """A request body must arrive within this."""
    send_timeout_s: float = 30.0
    """A client that takes no audio for this long is cut off, freeing its synthesis slot."""
    ws_idle_timeout_s: float = 300.0
    """A WebSocket with nothing sent by the client and nothing playing for this long is closed."""
    ws_max_queued: int = 8
    """Utterances one WebSocket may have waiting behind the one playing; more get `queue_full`."""


@dataclass(frozen=True)
class VoicesConfig:
    folder: Path | None = None
    """Extra Piper voices (`NAME.onnx` + `NAME.onnx.json`); the bundled default voice is always there."""
    default: str = "en_US-joe-medium"
    """Voice used when a request names none."""


FIRST_WINDOW_FRAMES: Final = 32
"""Useful frames of a sentence's first free-size decoder window: small, so audio starts early."""
MAX_WINDOW_FRAMES: Final = 256
"""Later windows grow to this: context overhead ~6%, and no worker is held long by one window."""


DEFAULT_SEED: Final = 0
"""Noise seed of requests that give none (unless `synthesis.vary`)."""


@dataclass(frozen=True)
class SynthesisConfig:
    inference_threads: int = 0
    """Worker threads running model stages (the bound on concurrent inference work); 0: one per CPU core."""
    onnx_threads: int = 1
    """onnxruntime's threads inside one run. One: the workers run windows and requests in parallel instead,
    which measured faster (benchmarks/threading_choice.py, README)."""
    first_window_frames: int = FIRST_WINDOW_FRAMES
    """Useful frames in a sentence's first CPU decoder window: small, so audio starts early."""
    max_window_frames: int = MAX_WINDOW_FRAMES
    """Useful frames in later CPU decoder windows: large, so the context overhead stays small."""
    max_streams: int = 0
    """Streams synthesising at once; 0 derives it: two per CPU core when the CPU decodes, two per NPU core
    when the NPU does."""
    queue_s: float = 0.5
    """How long a request waits for a free stream before it is refused as busy (503, Retry-After)."""
    seed: int = DEFAULT_SEED
    """The noise seed of a request that gives none: the same sentence sounds the same every time (and can come
    from the phrase cache)."""
    vary: bool = False
    """Fresh random noise for each request that gives no seed (such requests then bypass the phrase cache)."""
    stuck_job_s: float = 120.0
    """A model job (an encoding, a window) running longer than this means a wedged worker, and the systemd
    watchdog stops being pinged. Far above any real job: ~1 s on a board, ~40 s on an emulated one."""

    def __post_init__(self) -> None:
        if not 0 < self.stuck_job_s < 1e6:
            raise ConfigError(f"synthesis.stuck_job_s: expected a positive number of seconds, got {self.stuck_job_s}")
        if not 0 <= self.seed < 2**63:
            raise ConfigError(f"synthesis.seed: expected a whole number from 0 to 2^63-1, got {self.seed}")


@dataclass(frozen=True)
class CacheConfig:
    enabled: bool = True
    """Keep the audio of synthesised sentences in `<state_folder>/phrase-cache` and play it again from there."""
    max_mb: float = 200.0
    """Disk the phrase cache may take (MB, 10^6 bytes); the least recently used sentences go first."""
    prerender: Path | None = None
    """A file of phrases rendered into the cache at start-up, in the background: one per line, `text` or
    `voice|text`; blank lines and lines starting with # are ignored."""

    def __post_init__(self) -> None:
        if not 0 <= self.max_mb < 1e9:
            raise ConfigError(f"cache.max_mb: expected a size from 0 up, got {self.max_mb}")


@dataclass(frozen=True)
class AudioConfig:
    opus_bitrate: int = 24_000
    """Ogg Opus bitrate in bit/s."""
    default_format: str = "opus"
    """Format of a request that names none: opus, wav or pcm."""


@dataclass(frozen=True)
class NpuConfig:
    enabled: bool = True
    """Use the NPU when a usable one and a matching voice bundle are found (else the CPU decodes)."""
    bundles_folder: Path = SHIPPED_BUNDLES
    """Where converted voice bundles (`NAME/manifest.json`) live."""
    inference_deadline_s: float = 2.0
    """An NPU window taking longer than this is decoded on the CPU and its core taken out of service."""
    core_retry_s: float = 60.0
    """How long a failed NPU core rests before it is tried again."""


@dataclass(frozen=True)
class MdnsConfig:
    enabled: bool = True
    """Announce the appliance on the LAN with mDNS/DNS-SD."""
    instance_name: str = ""
    """Service instance name; empty means '<hostname> speech'."""


WYOMING_PORT: Final = 10200
"""The port Home Assistant's Wyoming integration suggests for text to speech (wyoming-piper's)."""


@dataclass(frozen=True)
class WyomingConfig:
    enabled: bool = True
    """Serve the Wyoming protocol (Home Assistant) on the LAN and announce it as `_wyoming._tcp`. It has no
    authentication: never forward this port beyond the LAN (the tunnel never carries it)."""
    host: str = "0.0.0.0"
    """Address of the Wyoming listener; all IPv4 addresses by default, like `server.host`."""
    port: int = WYOMING_PORT
    """Port of the Wyoming listener."""


@dataclass(frozen=True)
class TunnelConfig:
    enabled: bool = False
    """Keep an OpenSSH reverse tunnel to a hub so remote clients can reach the appliance."""
    hub_host: str = ""
    hub_port: int = 22
    hub_user: str = "appliance"
    remote_port: int = 0
    """Port the hub listens on (on its loopback) and forwards to this appliance."""
    hub_known_hosts: Path | None = None
    """known_hosts file pinning the hub's host key; required when the tunnel is enabled."""
    listener_port: int = 8849
    """Loopback-only listener the tunnel forwards to; every request there needs the bearer token."""
    max_connections: int = 128
    """Open connections on the tunnel's listener, apart from the LAN's, so the internet cannot starve the LAN."""
    server_alive_interval_s: int = 15
    max_backoff_s: float = 60.0


@dataclass(frozen=True)
class OpenAIConfig:
    voices: dict[str, str] = field(default_factory=dict)
    """Voice names an OpenAI client may send (alloy, echo, ... or any others) → one of ours, `"voice"` or
    `"voice:speaker"` (a speaker name or id). OpenAI's names missing here speak with `voices.default`."""

    def __post_init__(self) -> None:
        for name, target in self.voices.items():
            if not name or not target.partition(":")[0]:
                raise ConfigError(f"openai.voices.{name or '(empty)'}: expected \"voice\" or \"voice:speaker\", "
                                  f"got {target!r}")


@dataclass(frozen=True)
class ServiceConfig:
    state_folder: Path = Path("/var/lib/appliance")
    """Device key, token and caches. systemd's StateDirectory= provides it on the board."""
    watchdog: bool = True
    """Ping systemd's watchdog while the event loop and the inference workers are healthy."""


@dataclass(frozen=True)
class ApplianceConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    voices: VoicesConfig = field(default_factory=VoicesConfig)
    synthesis: SynthesisConfig = field(default_factory=SynthesisConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    npu: NpuConfig = field(default_factory=NpuConfig)
    mdns: MdnsConfig = field(default_factory=MdnsConfig)
    wyoming: WyomingConfig = field(default_factory=WyomingConfig)
    tunnel: TunnelConfig = field(default_factory=TunnelConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)


def load_config(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ApplianceConfig:
    """Defaults, then the TOML file (if given or present at the default path), then `APPLIANCE_SECTION_KEY`
    environment variables, then `overrides` ({"server.port": 9000}, from command-line flags)."""
    raw: dict[str, dict[str, Any]] = {}
    if path is None and DEFAULT_CONFIG_PATH.exists():
        path = DEFAULT_CONFIG_PATH
    if path is not None:
        try:
            with path.open("rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError as e:
            raise ConfigError(f"config file {path} does not exist") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from e
    config = config_from_dict(raw)
    env_values = _from_environment(os.environ if environ is None else environ)
    return apply_overrides(config, {**env_values, **(overrides or {})})


def config_from_dict(raw: Mapping[str, Any]) -> ApplianceConfig:
    sections: dict[str, Any] = {}
    known = {f.name: f for f in dataclasses.fields(ApplianceConfig)}
    for section_name, values in raw.items():
        if section_name not in known:
            raise ConfigError(f"unknown config section [{section_name}]")
        if not isinstance(values, Mapping):
            raise ConfigError(f"[{section_name}] must be a table")
        section_type = _field_type(ApplianceConfig, section_name)
        sections[section_name] = _section_from_dict(section_type, section_name, values)
    return ApplianceConfig(**sections)


def apply_overrides(config: ApplianceConfig, overrides: Mapping[str, Any]) -> ApplianceConfig:
    """Replace dotted keys ("server.port") with new values, converting strings to the field's type."""
    for dotted, value in overrides.items():
        section_name, _, key = dotted.partition(".")
        section = getattr(config, section_name, None)
        if section is None or not key or key not in {f.name for f in dataclasses.fields(section)}:
            raise ConfigError(f"unknown config key {dotted}")
        converted = _convert(_field_type(type(section), key), value, dotted)
        config = dataclasses.replace(config, **{section_name: dataclasses.replace(section, **{key: converted})})
    return config


def _from_environment(environ: Mapping[str, str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section, _, key = rest.partition("_")
        values[f"{section}.{key}"] = value
    return values


def _section_from_dict(section_type: type, section_name: str, values: Mapping[str, Any]) -> Any:
    fields = {f.name for f in dataclasses.fields(section_type)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"unknown config key {section_name}.{key}")
        kwargs[key] = _convert(_field_type(section_type, key), value, f"{section_name}.{key}")
    return section_type(**kwargs)


def _field_type(owner: type, name: str) -> Any:
    return typing.get_type_hints(owner)[name]


def _convert(expected: Any, value: Any, key: str) -> Any:
    """Check a TOML value (or convert an environment/flag string) against the field's declared type."""
    if isinstance(expected, types.UnionType):  # `X | None`: the empty string clears it
        inner = next(t for t in typing.get_args(expected) if t is not type(None))
        if value is None or value == "":
            return None
        return _convert(inner, value, key)
    if expected is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            return value.lower() in {"1", "true", "yes", "on"}
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a whole number, got {value!r}")
    if expected is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if expected is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if expected is Path:
        if isinstance(value, str | Path):
            return Path(value)
        raise ConfigError(f"{key}: expected a path, got {value!r}")
    if typing.get_origin(expected) is dict and typing.get_args(expected) == (str, str):
        return _string_table(value, key)
    raise ConfigError(f"{key}: unsupported type {expected}")  # a programming error, caught by tests


def _string_table(value: Any, key: str) -> dict[str, str]:
    """A TOML table of strings; from the environment, the same written as a TOML inline table:
    `APPLIANCE_OPENAI_VOICES='{alloy = "en_US-joe-medium", echo = "en_US-libritts-high:p3922"}'`."""
    if isinstance(value, str):
        try:
            value = tomllib.loads(f"table = {value}")["table"]
        except tomllib.TOMLDecodeError:
            raise ConfigError(f"{key}: expected a TOML inline table, {{name = \"value\", ...}}, got {value!r}"
                              ) from None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected a table of strings, got {value!r}")
    for name, item in value.items():
        if not isinstance(item, str):
            raise ConfigError(f"{key}.{name}: expected a string, got {item!r}")
    return dict(value)
