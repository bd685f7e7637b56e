"""The project's fused ONNX Runtime kernels: a CPU library, built from ``lstm_cell.cc`` here.

``ai.tlstm::LstmCell`` computes a tLSTM band's cell (spec steps 4-6 with CN) in one kernel
instead of about fifteen standard nodes. A package's ``step_incremental`` graph may come in
two files: the standard one, which any ONNX Runtime runs, and a *fused* one with this op
(``Graph.fused`` in :mod:`tlstm.contract`). The loader runs the fused file only where the
library loads and the CPU provider comes first; anywhere else (no compiler at install, CUDA,
another platform) the standard file runs, and both give the same numbers to float rounding.

    python -m tlstm.ort_ops build        # compile (the Makefile's install step does this)
    python -m tlstm.ort_ops status       # where the library is, or why there is none

Where it looks: ``TLSTM_ORT_OPS`` names the library file (``off`` disables the fused graphs);
otherwise ``libtlstm_ort.so`` beside this file, where ``build`` puts it.

The library is compiled against ONNX Runtime's C API headers (``scripts/ort-headers.sh``
fetches them; the onnxruntime wheel ships none) and asks the runtime for that header's API
version, which later runtimes serve too. This module imports nothing heavy: the service
imports it without torch or onnx.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

DOMAIN = "ai.tlstm"
LSTM_CELL = "LstmCell"
OPSET_VERSION = 1
ENV = "TLSTM_ORT_OPS"
HERE = Path(__file__).resolve().parent
SOURCE = HERE / "lstm_cell.cc"
LIBRARY = HERE / "libtlstm_ort.so"
HEADERS_SCRIPT = HERE.parent.parent / "scripts" / "ort-headers.sh"
# -ffinite-math-only and the others let the compiler vectorise the gate loops (no NaN or
# signed-zero cases to keep); a NaN input gives an unspecified output either way.
# -ffast-math itself is left out: in a shared library it would set flush-to-zero for the
# whole process.
CXXFLAGS = (
    "-O3", "-std=c++17", "-fPIC", "-shared", "-fvisibility=hidden", "-fno-math-errno", "-ffinite-math-only",
    "-fno-signed-zeros", "-fno-trapping-math", "-fassociative-math", "-static-libstdc++", "-static-libgcc",
)


class OpsUnavailable(RuntimeError):
    """The fused-kernel library cannot be built or loaded here (the message says why)."""


def library_path() -> Path | None:
    """The library to load, or None when there is none (or ``TLSTM_ORT_OPS=off``)."""
    value = os.environ.get(ENV, "").strip()
    if value.lower() in ("off", "0", "false", "no"):
        return None
    if value:
        return Path(value)
    return LIBRARY if LIBRARY.is_file() else None


@lru_cache(maxsize=8)
def _loads(path: str) -> str | None:
    """None when ONNX Runtime registers the library at ``path``, else the reason it does not."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    try:
        options.register_custom_ops_library(path)
    except Exception as exc:  # ORT raises its own Fail/RuntimeException types
        return f"{path}: ONNX Runtime cannot load it ({type(exc).__name__}: {exc})"
    return None


def why_unavailable() -> str | None:
    """None when the fused graphs can run here, else a sentence saying why not."""
    path = library_path()
    if path is None:
        if os.environ.get(ENV, "").strip():
            return f"{ENV}={os.environ[ENV]} turns the fused kernels off"
        return f"no {LIBRARY.name} (build it with `python -m tlstm.ort_ops build`)"
    if not path.is_file():
        return f"{ENV} names {path}, which is not a file"
    return _loads(str(path))


def register(options: Any) -> bool:
    """Register the library with ``options`` (an ``onnxruntime.SessionOptions``); False, and
    nothing registered, where it is unavailable."""
    if why_unavailable() is not None:
        return False
    path = library_path()
    options.register_custom_ops_library(str(path))
    return True


def build(headers: Path | None = None, out: Path = LIBRARY, compiler: str | None = None) -> Path:
    """Compile ``lstm_cell.cc`` into ``out`` (written atomically) and check that it loads.

    Args:
        headers: a folder holding ``onnxruntime_c_api.h`` and ``onnxruntime_cxx_api.h``;
            default: fetched by ``scripts/ort-headers.sh`` into ``build/ort-headers``.
        compiler: a C++17 compiler (default ``$CXX``, else ``c++``).
    Raises:
        OpsUnavailable: no compiler, no headers, a failed compile or a library ONNX Runtime
            refuses.
    """
    cxx = compiler or os.environ.get("CXX") or "c++"
    if shutil.which(cxx) is None:
        raise OpsUnavailable(f"no C++ compiler {cxx!r} on PATH (install g++, or set CXX)")
    if headers is None:
        cache = HERE.parent.parent / "build" / "ort-headers"
        if not HEADERS_SCRIPT.is_file():
            raise OpsUnavailable(f"no headers given and no {HEADERS_SCRIPT} to fetch them")
        fetched = subprocess.run(["bash", str(HEADERS_SCRIPT), str(cache)], capture_output=True, text=True, check=False)
        if fetched.returncode != 0:
            raise OpsUnavailable(f"fetching ONNX Runtime's headers failed: {fetched.stderr.strip()[-1000:]}")
        headers = cache / "include"
    if not (Path(headers) / "onnxruntime_cxx_api.h").is_file():
        raise OpsUnavailable(f"{headers}: no onnxruntime_cxx_api.h there")
    out = Path(out)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".build-") as tmp:
        partial = Path(tmp) / out.name
        cmd = [cxx, *CXXFLAGS, f"-I{headers}", str(SOURCE), "-o", str(partial)]
        compiled = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if compiled.returncode != 0:
            raise OpsUnavailable(f"compiling {SOURCE.name} failed:\n{compiled.stderr.strip()[-3000:]}")
        reason = _loads(str(partial))
        if reason is not None:
            raise OpsUnavailable(reason)
        os.replace(partial, out)
    _loads.cache_clear()
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tlstm.ort_ops", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("build", help=f"compile {SOURCE.name} into {LIBRARY.name}")
    make.add_argument("--headers", type=Path, help="folder with ONNX Runtime's C API headers (default: fetch them)")
    make.add_argument("--optional", action="store_true", help="report a failure and exit 0 (install steps)")
    sub.add_parser("status", help="where the library is, or why the fused graphs cannot run")
    args = parser.parse_args(argv)
    if args.command == "status":
        reason = why_unavailable()
        print(f"fused kernels: {library_path()}" if reason is None else f"fused kernels unavailable: {reason}")
        return 0 if reason is None else 1
    try:
        print(f"built {build(args.headers)}")
    except OpsUnavailable as exc:
        print(f"fused kernels not built: {exc}", file=sys.stderr)
        print("the standard graphs will run (same results, slower on CPU)", file=sys.stderr)
        return 0 if args.optional else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
