"""The Ray Serve application: the same FastAPI app on every replica, one engine each.

    tlstm serve --ray --replicas 2                 # a local Ray instance, 2 replicas, 127.0.0.1:8000
    tlstm serve --ray --autoscale 1:4              # Serve's autoscaler between 1 and 4 replicas
    tlstm serve --ray --address auto --replicas 3  # join a running cluster (or set RAY_ADDRESS)
    serve deploy deploy/ray/serve-config.yaml      # an existing cluster: import_path service.scale.ray_app:build

Each replica runs :func:`service.app.create_app` unchanged (``serve.ingress``): its own engine
with continuous batching and micro-batching, its settings from the ``TLSTM_`` environment of
its process plus the overrides it is given. What Serve adds maps onto the service's settings
(:func:`deployment_options`):

- ``max_ongoing_requests``: what one replica works on at once, ``TLSTM_MAX_STREAMS +
  TLSTM_MAX_SESSIONS`` (streams and WebSocket sessions; classifications are short);
- ``max_queued_requests``: requests waiting for a replica, ``TLSTM_MAX_STREAMS``; beyond,
  Serve answers 429 with ``Retry-After: 1`` at once, like the service's own limits;
- ``ray_actor_options.num_gpus``: 1 when the providers ask for CUDA and the cluster has GPUs
  (or ``TLSTM_REQUIRE_GPU``), else 0;
- health: a replica reports started only once its engine is warmed up and ready, and
  ``check_health`` fails when it is not ready any more (draining, or broken);
- shutdown: Serve stops routing to the replica and waits up to ``TLSTM_SHUTDOWN_GRACE_S``
  for the requests in flight; then the service drains (WebSocket sessions are closed with
  ``shutting_down``, what still runs ends with a final event).

Every response names its replica (``x-tlstm-replica: <app>#<deployment>#<id>``, the replica
actor being ``SERVE_REPLICA::`` + that). Sessions need no sticky routing: state tokens
(``TLSTM_STATE_KEY``, the same on every replica) continue on any replica.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Mapping
from typing import Any, cast

import ray
from ray import serve
from ray.serve import Application, Deployment

from ..app import create_app
from ..engine import switching  # the module, not its SWITCHING: Serve pickles this class by value
from ..engine.runtime import GPU_PROVIDER
from ..engine.state_token import install_log_redaction
from ..settings import Settings, get_settings
from . import proxy
from .replica import ReplicaHeader, ServiceLifespan

log = logging.getLogger("tlstm.service")

APP_NAME = "tlstm"
DEPLOYMENT = "tlstm"
_ACTOR_PREFIX = "SERVE_REPLICA::"


@serve.deployment(name=DEPLOYMENT)
@serve.ingress()
class TlstmReplica:
    """One replica: the service's settings, its FastAPI app and (in the app's lifespan) its engine.

    Args:
        settings: overrides of the ``TLSTM_`` environment of the replica's process (what the
            command line or the Serve config gives; never secrets, which come from the
            environment).
    """

    def __init__(self, settings: Mapping[str, Any] | None = None) -> None:
        self.settings = get_settings(**dict(settings or {}))
        logging.getLogger("tlstm").setLevel(self.settings.log_level.upper())
        install_log_redaction()
        switching.SWITCHING.configure(self.settings.switch_interval_ms / 1000)  # as `tlstm serve` does
        self.fastapi_app = create_app(self.settings)

    def __serve_build_asgi_app__(self) -> Any:
        name = serve.get_replica_context().replica_id.to_full_id_str().removeprefix(_ACTOR_PREFIX)
        return ReplicaHeader(ServiceLifespan(self.fastapi_app, self.settings.shutdown_grace_s), name)

    def check_health(self) -> None:
        """Serve's health check: the engine is ready (it was before the replica took traffic)."""
        service = self.fastapi_app.state.service
        if service is None or not service.ready:
            phase = service.phase if service is not None else "not started"
            raise RuntimeError(f"the tlstm service is not ready ({phase})")


def parse_autoscale(text: str) -> tuple[int, int]:
    """``"MIN:MAX"`` -> (MIN, MAX), 0 <= MIN <= MAX, MAX >= 1.

    Raises:
        ValueError: naming what is wrong.
    """
    low, sep, high = text.partition(":")
    try:
        bounds = (int(low), int(high)) if sep else (-1, -1)
    except ValueError:
        bounds = (-1, -1)
    if not (0 <= bounds[0] <= bounds[1] and bounds[1] >= 1):
        raise ValueError(f"--autoscale: expected MIN:MAX with 0 <= MIN <= MAX and MAX >= 1, got {text!r}")
    return bounds


def gpus_per_replica(settings: Settings, cluster_gpus: float) -> float:
    """1 when the providers ask for CUDA and there is a GPU to give (or one is required)."""
    wants_cuda = GPU_PROVIDER in settings.providers
    return 1.0 if wants_cuda and (settings.require_gpu or cluster_gpus > 0) else 0.0


def deployment_options(
    settings: Settings,
    *,
    replicas: int | None = None,
    autoscale: tuple[int, int] | None = None,
    target_ongoing_requests: float | None = None,
    num_cpus: float = 1.0,
    num_gpus: float | None = None,
    cluster_gpus: float = 0.0,
    max_ongoing_requests: int | None = None,
    max_queued_requests: int | None = None,
    upscale_delay_s: float = 5.0,
    downscale_delay_s: float = 30.0,
    look_back_period_s: float | None = None,
    env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Serve's options for the deployment, from the service's settings (module docstring).

    Args:
        replicas: a fixed number of replicas (default 1 unless ``autoscale``).
        autoscale: (min, max) replicas for Serve's autoscaler, which aims at
            ``target_ongoing_requests`` per replica (default a quarter of max_streams).
        num_cpus, num_gpus: each replica's Ray resources (num_gpus: see gpus_per_replica).
        cluster_gpus: GPUs the cluster has (for the default num_gpus).
        env: environment variables for the replicas' processes (``runtime_env``).
    Raises:
        ValueError: both or invalid replica counts.
    """
    if replicas is not None and autoscale is not None:
        raise ValueError("give either a number of replicas or autoscaling bounds, not both")
    if replicas is not None and replicas < 1:
        raise ValueError(f"replicas: expected at least 1, got {replicas}")
    actor: dict[str, Any] = {
        "num_cpus": num_cpus,
        "num_gpus": gpus_per_replica(settings, cluster_gpus) if num_gpus is None else num_gpus,
    }
    if env:
        actor["runtime_env"] = {"env_vars": dict(env)}
    options: dict[str, Any] = {
        "max_ongoing_requests": max_ongoing_requests or settings.max_streams + settings.max_sessions,
        "max_queued_requests": settings.max_streams if max_queued_requests is None else max_queued_requests,
        "backpressure_config": {"status_code": 429, "retry_after_s": 1},
        "ray_actor_options": actor,
        "health_check_period_s": 2.0,
        "health_check_timeout_s": 30.0,
        "graceful_shutdown_wait_loop_s": 0.5,
        "graceful_shutdown_timeout_s": settings.shutdown_grace_s,
    }
    if autoscale is not None:
        low, high = autoscale
        options["autoscaling_config"] = {
            "min_replicas": low,
            "initial_replicas": max(low, 1),
            "max_replicas": high,
            "target_ongoing_requests": target_ongoing_requests or max(1.0, settings.max_streams / 4),
            "upscale_delay_s": upscale_delay_s,
            "downscale_delay_s": downscale_delay_s,
        }
        if look_back_period_s is not None:  # how far back the ongoing requests are averaged (Serve: 30 s)
            options["autoscaling_config"]["look_back_period_s"] = look_back_period_s
    else:
        options["num_replicas"] = replicas or 1
    return options


def _cluster_gpus() -> float:
    return float(ray.cluster_resources().get("GPU", 0.0)) if ray.is_initialized() else 0.0


def application(
    overrides: Mapping[str, Any] | None = None, **options: Any
) -> Application:
    """The bound application: :class:`TlstmReplica` with the options of
    :func:`deployment_options` (keyword arguments) for the settings ``overrides`` give."""
    overrides = dict(overrides or {})
    settings = get_settings(**overrides)
    options.setdefault("cluster_gpus", _cluster_gpus())
    deployment = cast(Deployment, TlstmReplica)  # what @serve.deployment made of the class
    return deployment.options(**deployment_options(settings, **options)).bind(overrides)


def build(args: Mapping[str, Any]) -> Application:
    """The application builder for Serve config files (``import_path:
    service.scale.ray_app:build``); ``args``:

    - ``settings``: overrides of the ``TLSTM_`` environment (``models_dir``, ``providers``...;
      secrets such as ``state_key`` belong in the nodes' environment, not here);
    - ``replicas`` or ``autoscale`` (``"MIN:MAX"``), ``target_ongoing_requests``,
      ``num_cpus``, ``num_gpus``, ``max_ongoing_requests``, ``max_queued_requests``.

    The config file's ``deployments`` entries override any of these options again.
    """
    args = dict(args)
    overrides = args.pop("settings", None) or {}
    if "autoscale" in args and args["autoscale"] is not None:
        args["autoscale"] = parse_autoscale(str(args["autoscale"]))
    known = {"replicas", "autoscale", "target_ongoing_requests", "num_cpus", "num_gpus", "max_ongoing_requests",
             "max_queued_requests", "upscale_delay_s", "downscale_delay_s", "look_back_period_s"}
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown} for service.scale.ray_app:build; expected settings, {sorted(known)}")
    return application(overrides, **args)


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def run(
    settings: Settings,
    *,
    replicas: int | None = None,
    autoscale: tuple[int, int] | None = None,
    address: str | None = None,
    target_ongoing_requests: float | None = None,
    num_cpus: float = 1.0,
) -> int:
    """``tlstm serve --ray``: start (or join) Ray, run the application, serve until SIGTERM.

    Returns the exit status. On SIGTERM or Ctrl+C the application is deleted (every replica
    drains as described in the module docstring); a Ray instance started here is shut down
    with Serve, a joined cluster keeps running. (Serve's HTTP options are the cluster's: on a
    cluster where Serve already runs, its proxies keep their address.)
    """
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    os.environ.setdefault(proxy.ENVIRONMENT, proxy.IMPORT_PATH)  # read by the proxies of a Ray started here
    port = settings.port or _free_port(settings.host)
    env = {k: v for k, v in os.environ.items() if k.startswith("TLSTM_")}
    overrides = {"models_dir": str(settings.models_dir.resolve()), "log_level": settings.log_level}
    if not settings.models_dir.is_dir():
        print(f"tlstm serve: models directory {settings.models_dir} does not exist", file=sys.stderr)
        return 2
    if settings.state_key is None and (autoscale or (replicas or 1) > 1):
        log.warning("TLSTM_STATE_KEY is not set: sessions cannot move between replicas (no state tokens)")
    joined = address is not None or bool(os.environ.get("RAY_ADDRESS"))
    ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING)
    stop = threading.Event()
    try:
        serve.start(http_options={"host": settings.host, "port": port})
        app = application(overrides, replicas=replicas, autoscale=autoscale,
                          target_ongoing_requests=target_ongoing_requests, num_cpus=num_cpus, env=env)
        serve.run(app, name=APP_NAME, route_prefix="/")
        previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
        print(f"tlstm serve --ray: running on http://{settings.host}:{port} "
              f"({f'{autoscale[0]}..{autoscale[1]}' if autoscale else replicas or 1} replicas)", flush=True)
        stop.wait()
        log.info("stopping: the replicas drain for up to %.1f s", settings.shutdown_grace_s)
        serve.delete(APP_NAME)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        return 0
    finally:
        if not joined:  # Serve and Ray belong to this command; on a joined cluster only the application did
            serve.shutdown()
        ray.shutdown()
