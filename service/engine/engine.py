"""The engine: every model package of a directory, loaded, warmed up and served.

Plain Python over ONNX Runtime; it knows nothing about HTTP. Life cycle::

    engine = Engine(EngineConfig(...))
    engine.load(Path("models"))   # fatal problems raise StartupError
    engine.warm_up()              # then engine.ready is True
    ...                           # engine.model(name).generation / .classifier
    engine.refuse_new_work()      # draining: running streams go on, new ones are refused
    engine.close_streams()        # end whatever still runs with a final "shutting down" update
    engine.stop()
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service.package import ModelPackage, PackageError, load_package
from service.settings import DEFAULT_PROVIDERS, Settings
from tlstm.contract import MANIFEST_FILE, STEP, STEP_INCREMENTAL, Manifest

from .binding import IO_BINDINGS, BoundStepFunction
from .classification import ClassificationBatcher
from .errors import InvalidRequest, ModelNotFound, ShuttingDown, StartupError
from .generation import GenerationEngine
from .graphs import DECODINGS, make_classify_function, make_step_function
from .inputs import InputSpec
from .observer import Observer
from .runtime import check_gpu, import_onnxruntime, usable_providers
from .sampling import SamplingParams
from .scheduler import Delivery, Dispatch, deliver_inline
from .sessions import SessionRegistry
from .state_token import StateCodec, StateTokensDisabled, package_digest

log = logging.getLogger("tlstm.engine")

SERVED_KINDS = ("lm", "classifier")


def _default(name: str) -> Any:
    """The default of a setting (one place for every default: ``service.settings.Settings``)."""
    return Settings.model_fields[name].default


@dataclass(frozen=True)
class EngineConfig:
    """What the engine needs from the settings (see ``service.settings.Settings``, whose
    defaults these are)."""

    providers: tuple[str, ...] = DEFAULT_PROVIDERS
    require_gpu: bool = _default("require_gpu")
    intra_op_threads: int = _default("intra_op_threads")
    warmup_runs: int = _default("warmup_runs")
    max_streams: int = _default("max_streams")
    max_queued: int = _default("max_queued")
    max_batch: int = _default("max_batch")
    max_wait_s: float = _default("max_wait_ms") / 1000.0
    max_sessions: int = _default("max_sessions")
    decode: str = _default("decode")
    io_binding: str = _default("io_binding")
    state_key: bytes | None = field(default=None, repr=False)  # signs state tokens; None: they are off

    def __post_init__(self) -> None:
        if self.decode not in DECODINGS:
            raise ValueError(f"EngineConfig.decode: expected one of {list(DECODINGS)}, got {self.decode!r}")
        if self.io_binding not in IO_BINDINGS:
            raise ValueError(f"EngineConfig.io_binding: expected one of {list(IO_BINDINGS)}, got {self.io_binding!r}")

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineConfig:
        return cls(
            providers=tuple(settings.providers),
            require_gpu=settings.require_gpu,
            intra_op_threads=settings.intra_op_threads,
            warmup_runs=settings.warmup_runs,
            max_streams=settings.max_streams,
            max_queued=settings.max_queued,
            max_batch=settings.max_batch,
            max_wait_s=settings.max_wait_ms / 1000.0,
            max_sessions=settings.max_sessions,
            decode=settings.decode,
            io_binding=settings.io_binding,
            state_key=settings.state_key.get_secret_value().encode() if settings.state_key is not None else None,
        )


@dataclass
class ServedModel:
    """One loaded package and the machinery serving it.

    Attributes:
        name: the model's id (the package's name).
        kind: "lm" or "classifier".
        package: the loaded ``service.package.ModelPackage``.
        spec: its input specification.
        generation: the generation engine (language models).
        classifier: the micro-batcher (classifiers).
        state_codec: makes and reads the model's state tokens (language models, when the
            engine has a state key).
    """

    name: str
    kind: str
    package: ModelPackage
    spec: InputSpec
    generation: GenerationEngine | None = None
    classifier: ClassificationBatcher | None = None
    state_codec: StateCodec | None = None
    loaded_at: float = field(default_factory=time.time)

    @property
    def manifest(self) -> Manifest:
        return self.package.manifest

    def state_tokens(self) -> StateCodec:
        """The model's state-token codec.

        Raises:
            StateTokensDisabled: the engine has no state key.
            InvalidRequest: the model does not generate (a classifier).
        """
        if self.state_codec is not None:
            return self.state_codec
        if self.generation is None:
            raise InvalidRequest(f"model {self.name} is a classifier; state tokens are for language models", param="model")
        raise StateTokensDisabled()

    @property
    def providers(self) -> list[str]:
        return list(self.package.providers)

    @property
    def labels(self) -> list[str] | None:
        labels = self.manifest.labels
        return list(labels) if labels is not None else None

    @property
    def vocab(self) -> list[str] | None:
        vocab = self.manifest.vocab
        return list(vocab) if vocab is not None else None

    @property
    def decoding(self) -> str | None:
        """How the language model generates (``"incremental"`` or ``"simple"``); None for a
        classifier."""
        return self.generation.step_fn.decoding if self.generation is not None else None

    def describe(self) -> dict[str, Any]:
        """The model's public description (``/v1/models`` and ``/info``).

        ``architecture`` holds the model's shape and, for language models, ``decoding``: the
        decoding this service uses for it (``"incremental"`` or ``"simple"``).
        """
        manifest = self.manifest
        config = manifest.config
        architecture = {k: config.get(k) for k in ("arch", "order", "tensor_size", "kernel_size", "channels", "cell", "norm")}
        if self.decoding is not None:
            architecture["decoding"] = self.decoding
        return {
            "kind": self.kind,
            "depth": manifest.depth,
            "input": {"type": self.spec.type, "size": self.spec.size, "max_length": self.spec.max_length},
            "vocab_size": len(self.vocab) if self.vocab else None,
            "labels": self.labels,
            "providers": self.providers,
            "provider": self.providers[0] if self.providers else None,
            "architecture": architecture,
            "code_version": manifest.code_version,
            "created": manifest.created,
        }


class Engine:
    """All served models (see the module docstring).

    Args:
        config: providers, threads and limits.
        dispatch: how generation updates reach their listeners (default: on the engine's
            threads; the HTTP app passes one that hands them to its event loop).
        observer: metrics hooks.
    """

    def __init__(
        self, config: EngineConfig, *, dispatch: Dispatch = deliver_inline, observer: Observer | None = None
    ) -> None:
        self.config = config
        self._dispatch = dispatch
        self.observer = observer or Observer()
        self.models: dict[str, ServedModel] = {}
        self.sessions = SessionRegistry(config.max_sessions)
        self.ready = False
        self.draining = False
        self.providers_available: list[str] = []

    # ------------------------------------------------------------------ start-up
    def load(self, models_dir: Path) -> None:
        """Load every package under ``models_dir`` (one per subdirectory with a manifest.json).

        Raises:
            StartupError: no onnxruntime, no usable provider, a missing or empty directory, a
                package the loader rejects, or (with ``require_gpu``) a model not on CUDA.
        """
        ort = import_onnxruntime()
        self.providers_available = list(ort.get_available_providers())
        providers = usable_providers(self.config.providers)
        models_dir = Path(models_dir)
        if not models_dir.is_dir():
            raise StartupError(f"models directory {models_dir} does not exist (set --models or TLSTM_MODELS_DIR)")
        # hidden entries are skipped: an export in progress writes into `.NAME.tmp-*`
        paths = sorted(
            p for p in models_dir.iterdir() if not p.name.startswith(".") and (p / MANIFEST_FILE).is_file()
        )
        if not paths:
            raise StartupError(
                f"models directory {models_dir} holds no model package (expected subdirectories "
                "with a manifest.json, as written by `tlstm export`)"
            )
        for path in paths:
            try:
                package = load_package(path, providers=providers, intra_op_threads=self.config.intra_op_threads)
            except PackageError as exc:
                raise StartupError(f"cannot load model package {path}: {exc}") from exc
            except OSError as exc:
                raise StartupError(f"cannot read model package {path}: {exc}") from exc
            if package.kind not in SERVED_KINDS:
                log.warning("model package %s is of kind %r, which this service does not serve; skipped", path, package.kind)
                continue
            check_gpu(package.name, package.providers, self.config.require_gpu)
            if package.name in self.models:
                raise StartupError(f"two packages are named {package.name!r}; model names must be unique")
            self.models[package.name] = self._serve(package)
            log.info("loaded model %s (%s) from %s", package.name, package.kind, path)
        if not self.models:
            raise StartupError(f"models directory {models_dir} holds no package this service can serve (kinds {list(SERVED_KINDS)})")

    def set_dispatch(self, dispatch: Dispatch) -> None:
        """Change how generation updates reach their listeners (e.g. onto an event loop)."""
        self._dispatch = dispatch

    def _deliver(self, items: Delivery) -> None:
        self._dispatch(items)

    def _serve(self, package: ModelPackage) -> ServedModel:
        spec = InputSpec.from_manifest(package.manifest)
        served = ServedModel(name=package.name, kind=package.kind, package=package, spec=spec)
        cfg = self.config
        if package.kind == "lm":
            step_fn = make_step_function(package, cfg.decode, cfg.io_binding)
            if isinstance(step_fn, BoundStepFunction):
                log.info("model %s keeps its generation state on %s:%d (IOBinding)", package.name, *step_fn.device)
            if step_fn.decoding == "incremental":
                fused = STEP_INCREMENTAL in package.fused
                log.info("model %s decodes incrementally (%s)", package.name,
                         "step_incremental_fused.onnx, fused CPU kernels" if fused else "step_incremental.onnx")
            else:
                reason = "TLSTM_DECODE=simple" if cfg.decode == "simple" else package.manifest.decoding.reason
                log.info("model %s decodes the simple way (step.onnx): %s", package.name, reason)
            served.generation = GenerationEngine(
                package.name, list(package.manifest.vocab or ()), step_fn,
                max_streams=cfg.max_streams, dispatch=self._deliver, observer=self.observer,
            )
            served.generation.scheduler.start()
            if cfg.state_key is not None:
                graph = STEP_INCREMENTAL if step_fn.decoding == "incremental" else STEP
                served.state_codec = StateCodec(
                    cfg.state_key, model=package.name, package=package_digest(package.path), decoding=step_fn.decoding,
                    layout=[(spec.name, tuple(int(d) for d in spec.shape[1:])) for spec in package.state_inputs(graph)],
                    vocab_size=served.generation.vocab_size,
                )
        elif package.kind == "classifier":
            served.classifier = ClassificationBatcher(
                package.name, make_classify_function(package, cfg.io_binding), spec, max_batch=cfg.max_batch, max_wait_s=cfg.max_wait_s,
                max_queued=cfg.max_queued, observer=self.observer,
            )
            served.classifier.start()
        else:
            raise StartupError(f"model {package.name}: unknown kind {package.kind!r}; expected 'lm' or 'classifier'")
        return served

    def warm_up(self) -> None:
        """Run every graph ``warmup_runs`` times at a few batch sizes, then report ready."""
        started = time.perf_counter()
        for _ in range(self.config.warmup_runs):
            for served in self.models.values():
                if served.generation is not None:
                    self._warm_generation(served.generation)
                if served.classifier is not None:
                    self._warm_classifier(served.classifier, served.spec)
        self.ready = True
        log.info("warm-up done in %.2f s; %d model(s) ready", time.perf_counter() - started, len(self.models))

    def _warm_generation(self, generation: GenerationEngine) -> None:
        step = generation.step_fn
        for batch in (1, 8, min(self.config.max_streams, 32)):
            step.step(np.zeros(batch, dtype=np.int64), step.initial_state(batch))
        generation.complete(np.zeros(8, dtype=np.int64), SamplingParams(max_new=4, temperature=0), timeout=60)

    def _warm_classifier(self, batcher: ClassificationBatcher, spec: InputSpec) -> None:
        length = min(spec.max_length, 16)
        one = np.zeros((length,), np.int64) if spec.type == "tokens" else np.zeros((length, spec.size), np.float32)
        for count in (1, min(self.config.max_batch, self.config.max_queued, 16)):
            batcher.submit([one] * count).result(timeout=60)

    # ------------------------------------------------------------------ serving
    def model(self, name: str) -> ServedModel:
        """The served model ``name``; raises ModelNotFound listing the served ones."""
        try:
            return self.models[name]
        except KeyError:
            raise ModelNotFound(
                f"model {name!r} does not exist; served models: {sorted(self.models)}", param="model"
            ) from None

    def active_streams(self, name: str) -> int:
        served = self.models[name]
        return served.generation.scheduler.active if served.generation else 0

    def queued(self, name: str) -> int:
        served = self.models[name]
        return served.classifier.queued if served.classifier else 0

    # ------------------------------------------------------------------ shutdown
    def refuse_new_work(self) -> None:
        """Draining: new streams and classifications are refused, running ones go on."""
        self.draining = True
        error = ShuttingDown("the service is shutting down; no new work is accepted")
        for served in self.models.values():
            if served.generation is not None:
                served.generation.scheduler.refuse(error)
            if served.classifier is not None:
                served.classifier.close(error)

    def busy(self) -> int:
        """Streams still running plus classifications still queued."""
        return sum(self.active_streams(n) + self.queued(n) for n in self.models)

    def close_streams(self) -> None:
        """End every running stream with a final shutting-down update."""
        error = ShuttingDown("the service is shutting down; the stream was closed")
        for served in self.models.values():
            if served.generation is not None:
                served.generation.scheduler.close_all(error)

    def stop(self) -> None:
        """Stop every worker thread (streams still running are closed first)."""
        self.ready = False
        for served in self.models.values():
            if served.generation is not None:
                served.generation.scheduler.stop()
            if served.classifier is not None:
                served.classifier.stop()
