#!/usr/bin/env bash
# Every GPU check of issue 13 in one run, about 5 minutes on an H200 (at most 9: each step has a time limit):
#
#   tests  the fused-kernel tests (tests/model/test_fused_kernels.py, compiled for the GPU) and
#          the suite's GPU-marked tests (pytest -m gpu), TRITON_INTERPRET unset
#   bench  bench/bench_depth.py --device cuda at M=512, B=128, T=100, L=1,2,4,8: the eager 2D
#          tLSTM, the fused 2D tLSTM and cuDNN's nn.LSTM, once in fp32 and once in tf32
#   ort    ONNX Runtime's CUDA provider: onnxruntime-gpu joined from the parts under .gpu-wheel/
#          (bench/gpu_wheel.sh), its session providers read back (bench/gpu_ort_check.py), then
#          bench/bench_engine_providers.py --json FILE when that script exists
#
# Writes bench/results/gpu-<date>.json (fields: bench/results/README.md) and gpu-<date>.log,
# after every phase, so a run cut short still leaves a record; copies them into $OUT when it
# names a directory.
#
#   bash bench/gpu_check.sh
#   GPU_CHECK_PHASES=bench bash bench/gpu_check.sh      # some phases only (tests,bench,ort)
#
# A rehearsal without a GPU (every step but the GPU itself):
#   GPU_CHECK_BENCH_ARGS="--device cpu --quick" GPU_CHECK_RESULTS=/tmp/r GPU_CHECK_WHEELS=DIR bash bench/gpu_check.sh
#
# Before: bench/gpu_wheel.sh fetch && bench/gpu_wheel.sh split .gpu-wheel/whole/*.whl on a
# machine with an index, then bring .gpu-wheel/parts/*, .gpu-wheel/SHA256SUMS and
# .gpu-wheel/small/ to the repository root here (pytest comes from small/ if it is missing).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
PY="${PYTHON:-python3}"
PHASES="${GPU_CHECK_PHASES:-tests,bench,ort}"
DATE="$(date -u +%Y-%m-%dT%H%MZ)"
RESULTS="${GPU_CHECK_RESULTS:-$ROOT/bench/results}"
STEM="$RESULTS/gpu-$DATE"
LOG="$STEM.log"
JSON="$STEM.json"
WORK="$(mktemp -d)"
WHEELS="${GPU_CHECK_WHEELS:-$ROOT/.gpu-wheel}"
read -r -a BENCH_ARGS <<< "${GPU_CHECK_BENCH_ARGS:---device cuda}"
mkdir -p "$RESULTS"
unset TRITON_INTERPRET  # the kernels must compile for the GPU, not run in the interpreter
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

report() {
    "$PY" bench/gpu_report.py "$WORK" "$JSON" --log "$(basename "$LOG")" --date "$DATE" || echo "gpu_report.py failed"
    if [[ -n "${OUT:-}" && -d "${OUT:-}" ]]; then
        cp "$JSON" "$LOG" "$OUT"/ 2>/dev/null
        cp "$STEM"-*.png "$OUT"/ 2>/dev/null
    fi
    return 0
}

record() {  # NAME RC SECONDS
    local status=ok
    if [[ "$2" == 124 || "$2" == 137 ]]; then status=timeout; elif [[ "$2" != 0 ]]; then status=failed; fi
    printf '{"phase": "%s", "rc": %d, "status": "%s", "seconds": %s}\n' "$1" "$2" "$status" "$3" >> "$WORK/phases.jsonl"
    echo "=== $1: $status (rc $2, ${3}s)"
    report
}

step() {  # NAME LIMIT_S COMMAND...: run with a time limit, record the outcome
    local name="$1" limit="$2"
    shift 2
    echo "=== $name (limit ${limit}s): $*"
    local start rc
    start=$(date +%s)
    timeout --kill-after=5 "$limit" "$@"
    rc=$?
    record "$name" "$rc" "$(( $(date +%s) - start ))"
}

wanted() { [[ ",$PHASES," == *",$1,"* ]]; }

machine() {
    "$PY" - "$WORK/machine.json" <<'EOF'
import json, platform, subprocess, sys
info = {"python": platform.python_version(), "platform": platform.platform()}
for name in ("torch", "triton", "numpy", "onnx", "onnxscript", "onnxruntime", "pytest"):
    try:
        info[name] = __import__(name).__version__
    except Exception as exc:  # noqa: BLE001 - recorded
        info[name] = f"unavailable: {type(exc).__name__}: {exc}"
try:
    import torch
    info["torch_cuda"] = torch.version.cuda
    info["cudnn"] = torch.backends.cudnn.version()
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": p.name, "capability": f"{p.major}.{p.minor}", "sm_count": p.multi_processor_count,
                       "memory_gib": round(p.total_memory / 2**30, 1), "count": torch.cuda.device_count()}
except Exception as exc:  # noqa: BLE001
    info["torch_error"] = str(exc)
query = "name,driver_version,memory.total,clocks.max.sm,clocks.sm,power.limit,mig.mode.current,compute_cap"
try:
    out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
    info["nvidia_smi"] = {"query": query, "rows": out.stdout.strip().splitlines(), "stderr": out.stderr.strip()[-500:]}
except Exception as exc:  # noqa: BLE001
    info["nvidia_smi"] = {"error": str(exc)}
try:
    from tlstm.version import code_version
    info["code_version"] = code_version()
except Exception as exc:  # noqa: BLE001
    info["code_version"] = f"unavailable: {exc}"
json.dump(info, open(sys.argv[1], "w"), indent=2)
print(json.dumps(info, indent=2))
EOF
}

ensure_pytest() {
    "$PY" -c "import pytest" 2>/dev/null && return 0
    if compgen -G "$WHEELS/small/*.whl" >/dev/null; then
        bench/gpu_wheel.sh small "$WORK/site-test" && export PYTHONPATH="$PYTHONPATH:$WORK/site-test"
    fi
    "$PY" -c "import pytest" 2>/dev/null || { echo "pytest is not importable and $WHEELS/small/ has no wheels"; return 1; }
}

main() {
    echo "gpu_check.sh $DATE: phases $PHASES, python $PY, results $STEM.{json,log}"
    machine
    report
    if wanted tests; then
        if ensure_pytest; then
            step tests-fused 120 "$PY" -m pytest tests/model/test_fused_kernels.py -p no:cacheprovider -q -rs \
                --junitxml="$WORK/tests-fused.xml"
            step tests-gpu-marked 60 "$PY" -m pytest tests -m gpu --ignore=tests/model/test_fused_kernels.py \
                --continue-on-collection-errors -p no:cacheprovider -q -rs --junitxml="$WORK/tests-gpu-marked.xml"
        else
            record tests-setup 1 0
        fi
    fi
    if wanted bench; then
        for precision in fp32 tf32; do
            step "bench-$precision" 95 "$PY" bench/bench_depth.py "${BENCH_ARGS[@]}" --precision "$precision" \
                --json "$WORK/bench-$precision.json" --out "$STEM-depth-$precision.png"
        done
    fi
    if wanted ort; then
        step ort-join 45 env PYTHON="$PY" bench/gpu_wheel.sh install-once "$WHEELS/site-ort" "$WHEELS"
        if [[ -d "$WHEELS/site-ort/onnxruntime" ]]; then
            PYTHONPATH="$WHEELS/site-ort:$PYTHONPATH" step ort-providers 35 "$PY" bench/gpu_ort_check.py --json "$WORK/ort.json"
            if [[ -f bench/bench_engine_providers.py ]]; then
                PYTHONPATH="$WHEELS/site-ort:$PYTHONPATH" step engine-providers 60 "$PY" bench/bench_engine_providers.py \
                    --json "$WORK/engine.json"
            else
                echo "=== engine-providers: bench/bench_engine_providers.py does not exist; skipped"
            fi
        fi
    fi
    echo "gpu_check.sh done: $JSON"
}

main 2>&1 | tee "$LOG"
report
rm -rf "$WORK"
