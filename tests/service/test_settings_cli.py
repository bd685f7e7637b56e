"""Settings from the TLSTM_ environment, command-line overrides, and start-up failures."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys

import onnxruntime
import pytest
from pydantic import ValidationError

from service import server
from service.engine.errors import StartupError
from service.engine.runtime import import_onnxruntime
from service.engine.switching import SWITCHING
from service.settings import Settings, get_settings
from tlstm import cli

from .live import ROOT


def test_environment_is_read_when_asked_not_at_import(monkeypatch):
    monkeypatch.setenv("TLSTM_MAX_STREAMS", "not a number")
    importlib.reload(importlib.import_module("service.settings"))  # importing reads nothing
    with pytest.raises(ValidationError, match="max_streams"):
        Settings()


def test_lists_secrets_and_limits_from_the_environment(monkeypatch):
    monkeypatch.setenv("TLSTM_PROVIDERS", "CPUExecutionProvider, CUDAExecutionProvider")
    monkeypatch.setenv("TLSTM_API_KEYS", "k1,,k2 ")
    monkeypatch.setenv("TLSTM_MAX_STREAMS", "3")
    monkeypatch.setenv("TLSTM_PORT", "9999")
    settings = get_settings(port=1234, host=None)
    assert settings.providers == ["CPUExecutionProvider", "CUDAExecutionProvider"]
    assert settings.key_values() == ("k1", "k2")
    assert "k1" not in repr(settings) and "k1" not in str(settings.model_dump())
    assert settings.max_streams == 3 and settings.port == 1234 and settings.host == "127.0.0.1"


def test_defaults_follow_the_documented_contract():
    settings = Settings()
    assert (str(settings.models_dir), settings.host, settings.port) == ("models", "127.0.0.1", 8000)
    assert settings.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert (settings.require_gpu, settings.intra_op_threads, settings.api_keys, settings.shutdown_grace_s) == (False, 1, [], 10.0)
    assert (settings.max_wait_ms, settings.stream_interval_ms, settings.switch_interval_ms) == (0.0, 10.0, 0.1)


def test_the_server_process_uses_the_configured_switch_interval_while_generating(packages, monkeypatch):
    seen = []

    def run(self):  # instead of serving: what the process looks like when uvicorn would start
        seen.append((sys.getswitchinterval(), SWITCHING.busy_s))

    monkeypatch.setattr(server.DrainingServer, "run", run)
    monkeypatch.setenv("TLSTM_SWITCH_INTERVAL_MS", "0.25")
    before, busy_before = sys.getswitchinterval(), SWITCHING.busy_s
    try:
        server.main(["--models", str(packages.root)])
    finally:
        SWITCHING.configure(busy_before)
    # idle: Python's own interval stays; while some model generates: the configured one
    assert seen == [(before, pytest.approx(0.00025))]


def test_invalid_settings_end_the_command_with_a_message(monkeypatch, capsys):
    monkeypatch.setenv("TLSTM_MAX_STREAMS", "0")
    assert server.main(["--models", "models"]) == 2
    assert capsys.readouterr().err.strip() == (
        "tlstm serve: invalid settings: TLSTM_MAX_STREAMS: Input should be greater than or equal to 1"
    )


def test_missing_or_empty_models_directory(tmp_path, capsys):
    assert server.main(["--models", str(tmp_path / "absent")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"tlstm serve: models directory {tmp_path / 'absent'} does not exist (set --models or TLSTM_MODELS_DIR)"
    )
    assert server.main(["--models", str(tmp_path)]) == 2
    assert "holds no model package (expected subdirectories with a manifest.json" in capsys.readouterr().err


def test_damaged_package_is_fatal_and_named(packages, tmp_path, capsys):
    copy = tmp_path / "models"
    shutil.copytree(packages.root / "chars", copy / "chars")
    with (copy / "chars" / "step.onnx").open("r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01\x02")
    assert server.main(["--models", str(copy)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"tlstm serve: cannot load model package {copy / 'chars'}: ")
    assert "step.onnx: sha256 mismatch" in err


@pytest.mark.skipif("CUDAExecutionProvider" in onnxruntime.get_available_providers(), reason="a CUDA build is installed")
def test_required_gpu_missing_is_fatal(packages, monkeypatch, capsys):
    monkeypatch.setenv("TLSTM_REQUIRE_GPU", "true")
    monkeypatch.setenv("TLSTM_PROVIDERS", "CUDAExecutionProvider,CPUExecutionProvider")
    assert server.main(["--models", str(packages.root)]) == 2
    err = capsys.readouterr().err
    assert "CUDAExecutionProvider is required (TLSTM_REQUIRE_GPU=true) but the session runs on ['CPUExecutionProvider']" in err


def test_missing_onnxruntime_is_a_clear_start_up_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import` sees when it is not installed
    with pytest.raises(StartupError, match=r"onnxruntime is not importable .*pip install 'tlstm\[cpu\]'"):
        import_onnxruntime()


def test_tlstm_serve_is_dispatched(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["serve", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: tlstm serve") and "--models DIR" in out


def test_the_service_never_imports_torch():
    code = (
        "import sys, service.server, service.app, service.openapi\n"
        "service.openapi.document()\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"



def test_hidden_export_folders_are_not_loaded(packages, tmp_path):
    """An export in progress writes into `.NAME.tmp-*`; only finished packages are loaded."""
    from service.engine.engine import Engine, EngineConfig

    copy = tmp_path / "models"
    shutil.copytree(packages.root / "chars", copy / "chars")
    shutil.copytree(packages.root / "chars", copy / ".chars.tmp-1234")
    (copy / ".chars.tmp-1234" / "step.onnx").write_bytes(b"half written")
    engine = Engine(EngineConfig(providers=("CPUExecutionProvider",), warmup_runs=1))
    try:
        engine.load(copy)
        assert sorted(engine.models) == ["chars"]
    finally:
        engine.stop()
