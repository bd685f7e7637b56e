"""The service's settings: environment variables with the ``TLSTM_`` prefix.

Nothing is read at import: :func:`get_settings` builds a :class:`Settings` when called (the
server calls it once at start-up, tests build their own). Lists are comma separated:
``TLSTM_PROVIDERS=CUDAExecutionProvider,CPUExecutionProvider``, ``TLSTM_API_KEYS=k1,k2``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def _split_commas(value: Any) -> Any:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``; lists pass through."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Every knob of ``tlstm serve``; the environment name is ``TLSTM_`` + the field in capitals."""

    model_config = SettingsConfigDict(env_prefix="TLSTM_", extra="ignore", frozen=True)

    # ------------------------------------------------------------------ where and how
    models_dir: Path = Field(Path("models"), description="directory holding one model package per subdirectory")
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, ge=0, le=65535, description="TCP port (0 picks a free one)")
    workers: int = Field(
        1, ge=1, le=64,
        description="server processes on the one port, each with its own engine (see service.workers); "
        "more than 1 helps many small requests on several cores, while the streams and micro-batches split",
    )
    providers: Annotated[list[str], NoDecode] = Field(
        list(DEFAULT_PROVIDERS),
        description="ONNX Runtime execution providers in order of preference; unavailable ones are skipped",
    )
    require_gpu: bool = Field(False, description="refuse to start unless every model runs on CUDAExecutionProvider")
    intra_op_threads: int = Field(1, ge=1, le=256, description="ONNX Runtime intra-op threads per session")
    warmup_runs: int = Field(2, ge=0, le=100, description="warm-up calls of every graph before reporting ready")
    decode: Literal["incremental", "simple"] = Field(
        "incremental",
        description="how language models generate: 'incremental' (exact incremental decoding, about one step "
        "of work per character, where the package has it) or 'simple' (step.onnx: L steps per character)",
    )
    io_binding: Literal["auto", "on", "off"] = Field(
        "auto",
        description="run the graphs through ONNX Runtime IOBinding, the generation state kept on the device "
        "between steps: 'auto' when a model's session runs on CUDAExecutionProvider, 'on' on any provider, 'off' never",
    )
    stream_interval_ms: float = Field(
        10.0, ge=0, le=1000,
        description="shortest time between two hand-overs of generated characters to the HTTP layer; the "
        "characters made meanwhile go out together (0: after every step). The first characters of an idle "
        "service are not delayed",
    )
    switch_interval_ms: float = Field(
        0.1, gt=0, le=100,
        description="Python's thread switch interval in the server process (sys.setswitchinterval) while a "
        "model generates: how long the generation thread may wait for the event loop to hand over the GIL "
        "(Python's default, 5, applies while nothing generates)",
    )
    log_level: str = Field("info", description="log level of the service and uvicorn")

    # ------------------------------------------------------------------ access
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="accepted bearer tokens; empty means no authentication"
    )
    auth_health: bool = Field(False, description="require a key for /health/* and /info as well")
    auth_metrics: bool = Field(False, description="require a key for /metrics as well")
    state_key: SecretStr | None = Field(
        None,
        description="secret that signs state tokens (HMAC-SHA256), at least 32 characters and the same on every "
        "replica; unset: state tokens are off",
    )

    # ------------------------------------------------------------------ limits
    max_prompt_chars: int = Field(4096, ge=1, description="longest prompt (characters) of a completion")
    max_new_chars: int = Field(2048, ge=1, description="largest max_tokens (characters) of a completion")
    max_prompts: int = Field(16, ge=1, description="most prompts in one completion request")
    # 256: on 2 cores each of 256 streams still gets 23 characters/s over HTTP and its first within a
    # second; beyond, the aggregate rate no longer grows and only the wait does (bench/bench_streams.py)
    max_streams: int = Field(256, ge=1, description="concurrent generation streams per model (per worker); beyond: 429")
    max_queued: int = Field(1024, ge=1, description="queued classification inputs per model; beyond: 429")
    max_inputs: int = Field(256, ge=1, description="most sequences in one classify request")
    max_batch: int = Field(64, ge=1, description="largest classification micro-batch")
    max_wait_ms: float = Field(
        0.0, ge=0,
        description="longest a classification waits for others to share its batch; 0 runs at once with what is "
        "queued (under load, the inputs that arrive while one batch runs form the next)",
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="largest request body; beyond: 413")
    request_timeout_s: float = Field(60.0, gt=0, description="longest one request (or stream) may run")
    max_sessions: int = Field(64, ge=1, description="concurrent WebSocket prediction sessions; beyond: refused")
    session_idle_s: float = Field(300.0, gt=0, description="a WebSocket session idle this long is closed")
    shutdown_grace_s: float = Field(10.0, gt=0, description="on SIGTERM, the time open streams get to finish")

    @field_validator("providers", "api_keys", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        return _split_commas(value)

    @field_validator("providers")
    @classmethod
    def _providers_not_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("expected at least one execution provider, e.g. CPUExecutionProvider")
        return value

    @field_validator("state_key")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError(
                f"expected at least 32 characters, got {len(value.get_secret_value())} "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        levels = ("critical", "error", "warning", "info", "debug")
        if value.lower() not in levels:
            raise ValueError(f"expected one of {list(levels)}, got {value!r}")
        return value.lower()

    def key_values(self) -> tuple[str, ...]:
        """The accepted API keys in clear (for comparison only; never log them)."""
        return tuple(key.get_secret_value() for key in self.api_keys)

    def limits(self) -> dict[str, float | int]:
        """The request limits, as shown by ``GET /info``."""
        names = (
            "max_prompt_chars", "max_new_chars", "max_prompts", "max_streams", "max_queued",
            "max_inputs", "max_batch", "max_wait_ms", "stream_interval_ms", "max_body_bytes", "request_timeout_s",
            "max_sessions", "session_idle_s", "shutdown_grace_s",
        )
        return {name: getattr(self, name) for name in names}


def get_settings(**overrides: Any) -> Settings:
    """Read the environment now; keyword arguments (e.g. from the command line) win over it."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
