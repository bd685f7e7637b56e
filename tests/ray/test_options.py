"""How the service's settings map onto Ray Serve's options, the Serve config file, and the
command line of `tlstm serve --ray` (no cluster needed)."""

from __future__ import annotations

import pytest
import yaml

from service.server import main as serve_main
from service.settings import Settings

from .conftest import MODELS, ROOT


def test_settings_map_onto_serve_options():
    from service.scale.ray_app import deployment_options

    settings = Settings(max_streams=10, max_sessions=3, shutdown_grace_s=7, providers=["CPUExecutionProvider"])
    options = deployment_options(settings, replicas=3)
    assert options["num_replicas"] == 3 and "autoscaling_config" not in options
    assert options["max_ongoing_requests"] == 13 and options["max_queued_requests"] == 10
    assert options["backpressure_config"] == {"status_code": 429, "retry_after_s": 1}
    assert options["graceful_shutdown_timeout_s"] == 7
    assert options["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 0.0}
    scaled = deployment_options(settings, autoscale=(0, 4), target_ongoing_requests=2, env={"TLSTM_X": "1"})
    assert "num_replicas" not in scaled
    auto = scaled["autoscaling_config"]
    assert (auto["min_replicas"], auto["initial_replicas"], auto["max_replicas"], auto["target_ongoing_requests"]) == (0, 1, 4, 2)
    assert scaled["ray_actor_options"]["runtime_env"] == {"env_vars": {"TLSTM_X": "1"}}
    with pytest.raises(ValueError, match="either a number of replicas or autoscaling bounds"):
        deployment_options(settings, replicas=2, autoscale=(1, 2))


def test_gpus_follow_the_providers():
    from service.scale.ray_app import gpus_per_replica

    cuda = Settings(providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert gpus_per_replica(cuda, cluster_gpus=2) == 1.0
    assert gpus_per_replica(cuda, cluster_gpus=0) == 0.0  # asks for CUDA where there is one
    assert gpus_per_replica(Settings(providers=["CUDAExecutionProvider"], require_gpu=True), cluster_gpus=0) == 1.0
    assert gpus_per_replica(Settings(providers=["CPUExecutionProvider"]), cluster_gpus=8) == 0.0


def test_autoscale_bounds_are_checked():
    from service.scale.ray_app import parse_autoscale

    assert parse_autoscale("1:4") == (1, 4) and parse_autoscale("0:1") == (0, 1)
    for bad in ("4:1", "0:0", "1", "a:b", "-1:2"):
        with pytest.raises(ValueError, match="expected MIN:MAX"):
            parse_autoscale(bad)


def test_the_serve_config_file_is_valid_and_builds():
    from ray.serve.schema import ServeDeploySchema

    from service.scale.ray_app import build

    config = yaml.safe_load((ROOT / "deploy" / "ray" / "serve-config.yaml").read_text())
    ServeDeploySchema.model_validate(config)
    (application,) = config["applications"]
    assert application["import_path"] == "service.scale.ray_app:build"
    args = {**application["args"], "settings": {**application["args"]["settings"], "models_dir": str(MODELS)}}
    built = build(args)
    assert type(built).__name__ == "Application"
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['replica'\]"):
        build({"replica": 2})
    manifest = yaml.safe_load((ROOT / "deploy" / "ray" / "kuberay-rayservice.yaml").read_text())
    embedded = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    ServeDeploySchema.model_validate(embedded)
    assert embedded["applications"][0]["import_path"] == application["import_path"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--replicas", "2"], "--replicas needs --ray"),
    (["--autoscale", "1:2"], "--autoscale needs --ray"),
    (["--ray", "--autoscale", "3:1"], "expected MIN:MAX"),
    (["--ray", "--replicas", "0"], "--replicas: expected at least 1"),
])
def test_command_line_errors(argv, message, capsys):
    assert serve_main(["--models", str(MODELS), *argv]) == 2
    assert message in capsys.readouterr().err
