"""Gather the pieces bench/gpu_check.sh leaves in its work folder into one JSON record.

    python bench/gpu_report.py WORK_DIR OUT_JSON --log LOG --date DATE

Standard library only (it runs after every phase, so that a run cut short still leaves a
record). Reads, when present: phases.jsonl (one line per finished phase), machine.json,
tests-*.xml (pytest JUnit reports), bench-<precision>.json (bench/bench_depth.py --json),
ort.json (bench/gpu_ort_check.py) and engine.json (bench/bench_engine_providers.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

HEADLINE_PRECISION = "tf32"  # both engines on tensor cores: cuDNN's default for RNNs, opt-in for matmuls


def _json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        return {"error": f"{path.name}: not valid JSON ({exc})"}


def junit(path: Path) -> dict[str, Any]:
    """Counts and every test case's outcome from a pytest JUnit XML file."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        return {"error": f"{path.name}: {exc}"}
    cases = []
    for case in root.iter("testcase"):
        outcome = "passed"
        detail = None
        for tag in ("failure", "error", "skipped"):
            node = case.find(tag)
            if node is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                detail = (node.get("message") or "")[:500]
        cases.append({"name": f"{case.get('classname')}::{case.get('name')}", "outcome": outcome,
                      "seconds": float(case.get("time") or 0), **({"detail": detail} if detail else {})})
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "error", "skipped")}
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    collection_errors = int(suite.get("errors", 0)) - counts["error"] if suite is not None else 0
    return {**counts, "collection_errors": max(collection_errors, 0), "cases": cases}


def build(work: Path, log: str | None, date: str | None) -> dict[str, Any]:
    phases = []
    if (work / "phases.jsonl").is_file():
        phases = [json.loads(line) for line in (work / "phases.jsonl").read_text().splitlines() if line.strip()]
    record: dict[str, Any] = {
        "date": date, "script": "bench/gpu_check.sh", "log": log, "machine": _json(work / "machine.json"),
        "phases": phases, "tests": {p.stem.removeprefix("tests-"): junit(p) for p in sorted(work.glob("tests-*.xml"))},
        "bench_depth": {}, "ort_provider_check": _json(work / "ort.json"), "engine_providers": _json(work / "engine.json"),
    }
    for path in sorted(work.glob("bench-*.json")):
        record["bench_depth"][path.stem.removeprefix("bench-")] = _json(path)
    headline: dict[str, Any] = {}
    for precision, bench in record["bench_depth"].items():
        if not isinstance(bench, dict) or "engines" not in bench:
            continue
        lo, hi = bench["depth_range"]
        key = f"tlstm_over_cudnn_L{hi}"
        if key in bench:
            headline[f"{key}_{precision}"] = bench[key]
            headline[f"eager_{key}_{precision}"] = bench.get(f"eager_{key}")
        fused = bench["engines"].get("tlstm-2d-fused")
        if fused:
            headline[f"fused_t_L{hi}_over_t_L{lo}_{precision}"] = fused[f"t_L{hi}_over_t_L{lo}"]
            point = fused["depths"][str(hi)]
            headline[f"fused_L{hi}_tokens_per_s_{precision}"] = point["tokens_per_s"]
            for k in ("frac_fp32_peak", "frac_tf32_peak"):
                if k in point:
                    headline[f"fused_L{hi}_{k}_{precision}"] = point[k]
    main = record["bench_depth"].get(HEADLINE_PRECISION)
    if isinstance(main, dict) and "tlstm_over_cudnn_L8" in main:
        headline["tlstm_over_cudnn_L8"] = main["tlstm_over_cudnn_L8"]
        headline["tlstm_over_cudnn_L8_precision"] = HEADLINE_PRECISION
        headline["tlstm_over_cudnn_L8_engine"] = main.get("tlstm_over_cudnn_engine")
    else:
        headline["tlstm_over_cudnn_L8"] = None
    ort = record["ort_provider_check"]
    record["providers"] = {
        "ort_session_providers": ort.get("session_providers") if isinstance(ort, dict) else None,
        "ort_cuda_in_use": ort.get("cuda_in_use") if isinstance(ort, dict) else None,
        "engine_providers": (record["engine_providers"] or {}).get("providers") if isinstance(record["engine_providers"], dict) else None,
    }
    record.update(headline)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--log", default=None)
    parser.add_argument("--date", default=None)
    args = parser.parse_args(argv)
    record = build(args.work, args.log, args.date)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
