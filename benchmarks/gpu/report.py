"""Markdown tables from a pytest-benchmark JSON of ``benchmarks/test_sweep_cuda.py``.

Usage: ``python benchmarks/gpu/report.py bench.json``. Per workload: seconds for the whole
grid (seconds per grid point times the grid's points, ``*`` where the time was taken on a
subset and scaled) of the fused kernel, the reference kernel, the torch.func fallback and
the per-point loop, their ratios, and the fused kernel's forward GFLOP/s against the same
run's fp32 matmul; then TF32 against float32 (fused and torch), float64 in both weight
layouts, every tiled plan tried, and the issue's goals with met/missed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping

GOALS = (  # workload, measure, target
    ("paper", "fallback/fused", 6.0),
    ("paper", "% of matmul", 40.0),
    ("a", "fallback/fused", 20.0),
    ("c", "fallback/fused", 5.0),
    ("paper", "fallback/fused-tf32", 20.0),
)
BASELINES = ("fused", "fused-reference", "fused-f64", "torch", "loop")


def main(path: str) -> None:
    with open(path) as handle:
        data = json.load(handle)
    entries: dict[tuple[str, str], Mapping] = {}
    matmul = matmul_tf32 = None
    for bench in data.get("benchmarks", []):
        extra = bench.get("extra_info", {})
        if extra.get("method") == "matmul":
            matmul = extra
        elif extra.get("method") == "matmul-tf32":
            matmul_tf32 = extra
        elif "workload" in extra:
            entries[(extra["workload"], extra["method"])] = extra
    if not entries:
        print("no CUDA sweep benchmarks in", path)
        return
    device = next(iter(entries.values()))["device"]
    mm = matmul["gflops"] if matmul else None
    print(f"## GPU: {device}\n")
    info = data.get("machine_info", {})
    print(
        f"torch {info.get('torch_version', '?')}; genni_ext build: "
        f"{json.dumps(info.get('genni_ext_build_info', {}))}\n"
    )
    mm_tf32 = matmul_tf32["gflops"] if matmul_tf32 else None
    if mm:
        print(f"Same-run fp32 matmul (8192², TF32 off): {mm / 1000:.1f} TFLOP/s\n")
    if mm_tf32:
        print(f"Same-run matmul with TF32 on: {mm_tf32 / 1000:.1f} TFLOP/s\n")
    workloads = sorted({w for w, _ in entries}, key=lambda w: (len(w), w))
    print(
        "| workload | fused | reference | torch.func | loop | torch/fused | loop/fused | "
        "reference/fused | fused TFLOP/s | % of matmul | fused f64 |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    ratios: dict[tuple[str, str], float] = {}
    for workload in workloads:
        row = {m: entries.get((workload, m)) for m in BASELINES}
        fused = row["fused"]
        if fused is None:
            continue
        grid = fused["grid_points"]

        def whole(entry: Mapping | None, grid: int = grid) -> str:
            if entry is None:
                return "n/a"
            mark = "*" if entry["scaled"] else ""
            return f"{entry['seconds_per_point'] * grid:.4g} s{mark}"

        def ratio(entry: Mapping | None, fused: Mapping = fused) -> str:
            if entry is None:
                return "n/a"
            return f"{entry['seconds_per_point'] / fused['seconds_per_point']:.2f}×"

        if row["torch"]:
            ratios[(workload, "fallback/fused")] = (
                row["torch"]["seconds_per_point"] / fused["seconds_per_point"]
            )
        share = 100 * fused["gflops"] / mm if mm else float("nan")
        ratios[(workload, "% of matmul")] = share
        print(
            f"| {workload}: {fused['title']}, {grid} points, {fused['probes']} probes | "
            f"{whole(fused)} | {whole(row['fused-reference'])} | {whole(row['torch'])} | "
            f"{whole(row['loop'])} | {ratio(row['torch'])} | {ratio(row['loop'])} | "
            f"{ratio(row['fused-reference'])} | {fused['gflops'] / 1000:.2f} | {share:.1f} % | "
            f"{whole(row['fused-f64'])} |"
        )
    print("\n`*`: timed on an evenly spaced subset of the grid, scaled per point.\n")
    print("### TF32 and float64 (seconds for the whole grid)\n")
    print(
        "| workload | fused tf32 | torch tf32 | torch fp32 / fused tf32 | torch tf32 / fused tf32 "
        "| fused fp32 / fused tf32 | tf32 % of TF32 matmul | max rel. diff tf32 vs fp32 "
        "| f64 (default layout) | f64 torch layout |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for workload in workloads:
        fused, tf32 = entries.get((workload, "fused")), entries.get((workload, "fused-tf32"))
        if fused is None or tf32 is None:
            continue
        grid = fused["grid_points"]
        torch32, torch_tf32 = (
            entries.get((workload, "torch")),
            entries.get((workload, "torch-tf32")),
        )

        def over(entry: Mapping | None, tf32: Mapping = tf32) -> str:
            if entry is None:
                return "n/a"
            return f"{entry['seconds_per_point'] / tf32['seconds_per_point']:.2f}×"

        def grid_time(entry: Mapping | None, grid: int = grid) -> str:
            if entry is None:
                return "n/a"
            return f"{entry['seconds_per_point'] * grid:.4g} s{'*' if entry['scaled'] else ''}"

        if torch32:
            ratios[(workload, "fallback/fused-tf32")] = (
                torch32["seconds_per_point"] / tf32["seconds_per_point"]
            )
        share = f"{100 * tf32['gflops'] / mm_tf32:.1f} %" if mm_tf32 else "n/a"
        print(
            f"| {workload} | {grid_time(tf32)} | {grid_time(torch_tf32)} | {over(torch32)} | "
            f"{over(torch_tf32)} | {over(fused)} | {share} | "
            f"{tf32.get('max_rel_diff_vs_fused', float('nan')):.1e} | "
            f"{grid_time(entries.get((workload, 'fused-f64')))} | "
            f"{grid_time(entries.get((workload, 'f64-torch-layout')))} |"
        )
    print()
    print("### Tiled plans tried (seconds per grid point; ratio to the default plan)\n")
    print("| workload | plan | samples/tile | threads | weight layout | s/point | vs default |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for workload in workloads:
        fused = entries.get((workload, "fused"))
        for (w, method), entry in sorted(entries.items()):
            if w != workload or not (method.startswith("tiled-") or method == "fused"):
                continue
            plan = entry.get("plan") or {}
            layout = "transposed" if plan.get("transposed") else "torch"
            print(
                f"| {workload} | {method} | {plan.get('samples')} | {plan.get('threads')} | "
                f"{layout} | {entry['seconds_per_point']:.3e} | "
                f"{entry['seconds_per_point'] / fused['seconds_per_point']:.2f} |"
            )
    print("\n### Goals\n")
    print("| workload | measure | goal | measured | |")
    print("| --- | --- | --- | --- | --- |")
    for workload, measure, target in GOALS:
        value = ratios.get((workload, measure))
        if value is None:
            print(f"| {workload} | {measure} | {target:g} | n/a | |")
            continue
        verdict = "met" if value >= target else f"missed ({value / target:.2f} of the goal)"
        print(f"| {workload} | {measure} | {target:g} | {value:.2f} | {verdict} |")


if __name__ == "__main__":
    main(sys.argv[1])
