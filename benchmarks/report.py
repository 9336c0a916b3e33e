"""Markdown tables from a pytest-benchmark JSON of ``benchmarks/test_sweep.py``.

Usage::

    pytest benchmarks --benchmark-json=bench.json -p no:randomly
    python benchmarks/report.py bench.json

Prints the machine (from the JSON) and ``genni_ext.build_info()``, then per workload the
seconds per grid point of the fused engine, the torch.func fallback, ``torch.compile`` of
the vmapped J (steady state, and its compile time apart) and the per-point loop with their
ratios, the useful forward GFLOP/s of every workload against the same run's matmul, the
affine vs direct first layer, and the performance goals with met/missed and by how much.
Every number comes from ``extra_info`` of the benchmarks in the JSON (the
fastest round, divided by the grid points it evaluated). Where the JSON holds the search
benchmarks (``benchmarks/test_search.py``), a "Search" section follows: batched against
sequential starts, their ratio and its goal.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

Info = Mapping[str, object]

THROUGHPUT_WORKLOADS = ("a", "b", "c", "d")
MATMUL_SHARE_GOAL = 40.0
SMALL_NET_SHARE_GOAL = 50.0  # issue 20: (a), (b) at half the matmul rate for their flops
SEARCH_GOAL = 5.0


@dataclass(frozen=True)
class Goal:
    """A speed goal: ``measure`` of ``workload`` must reach ``target``."""

    workload: str
    measure: str  # "fallback/fused", "loop/fused", "compiled/fused" or "% of matmul"
    target: float


GOALS = (
    Goal("a", "fallback/fused", 20.0),
    Goal("a", "loop/fused", 300.0),
    Goal("d", "fallback/fused", 2.0),
    Goal("c", "% of matmul", MATMUL_SHARE_GOAL),
    Goal("d", "% of matmul", MATMUL_SHARE_GOAL),
    Goal("a", "compiled/fused", 1.0),
    Goal("b", "compiled/fused", 1.0),
    Goal("c", "compiled/fused", 1.0),
    Goal("d", "compiled/fused", 1.0),
    Goal("a", "% of matmul", SMALL_NET_SHARE_GOAL),
    Goal("b", "% of matmul", SMALL_NET_SHARE_GOAL),
)


class Results:
    """The benchmarks of one JSON, keyed by (workload, method)."""

    def __init__(self, data: Mapping[str, object]) -> None:
        self.machine: Info = _mapping(data.get("machine_info"))
        self.commit: Info = _mapping(data.get("commit_info"))
        self.datetime = str(data.get("datetime", "?"))
        self.entries: dict[tuple[str, str], Info] = {}
        self.matmul: Info | None = None
        self.untimed = 0
        self.search: dict[str, Info] = {}
        benchmarks = data.get("benchmarks")
        for bench in benchmarks if isinstance(benchmarks, list) else []:
            extra = _mapping(_mapping(bench).get("extra_info"))
            if extra.get("timed") is False:
                self.untimed += 1
            method = str(extra.get("method", ""))
            if method == "matmul":
                self.matmul = extra
            elif "search" in extra:
                self.search[method] = extra
            elif "workload" in extra:
                self.entries[(str(extra["workload"]), method)] = extra

    def workloads(self) -> list[str]:
        return sorted({workload for workload, _ in self.entries})

    def get(self, workload: str, method: str) -> Info | None:
        return self.entries.get((workload, method))

    def per_point(self, workload: str, method: str) -> float | None:
        entry = self.get(workload, method)
        return None if entry is None else _number(entry.get("seconds_per_point"))

    def ratio(self, workload: str, slow: str, fast: str) -> float | None:
        numerator, denominator = self.per_point(workload, slow), self.per_point(workload, fast)
        if numerator is None or not denominator:
            return None
        return numerator / denominator

    def gflops(self, workload: str, method: str) -> float | None:
        entry = self.get(workload, method)
        return None if entry is None else _number(entry.get("gflops"))

    def matmul_gflops(self) -> float | None:
        return None if self.matmul is None else _number(self.matmul.get("gflops"))

    def matmul_share(self, workload: str, method: str = "fused") -> float | None:
        """Useful GFLOP/s of ``method`` as a percentage of the same run's matmul."""
        rate, roof = self.gflops(workload, method), self.matmul_gflops()
        if rate is None or not roof:
            return None
        return 100.0 * rate / roof

    def measure(self, goal: Goal) -> float | None:
        if goal.measure == "fallback/fused":
            return self.ratio(goal.workload, "torch", "fused")
        if goal.measure == "loop/fused":
            return self.ratio(goal.workload, "loop", "fused")
        if goal.measure == "compiled/fused":
            return self.ratio(goal.workload, "compiled", "fused")
        return self.matmul_share(goal.workload)


def _mapping(value: object) -> Info:
    return value if isinstance(value, Mapping) else {}


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def seconds(value: float | None) -> str:
    """A duration with a readable unit: 1.23 s, 45.6 ms, 7.89 µs, 120 ns."""
    if value is None:
        return "n/a"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value / 1e-9:.3g} ns"


def times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.1f}×"


def number(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def count(value: object) -> str:
    number = _number(value)
    return "?" if number is None else f"{int(number):,}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _any(results: Results, workload: str) -> Info:
    """The workload's fused entry, else any of its entries (they share the workload facts)."""
    return results.get(workload, "fused") or next(
        (info for (key, _), info in results.entries.items() if key == workload), {}
    )


def _title(results: Results, workload: str) -> str:
    entry = _any(results, workload)
    return f"({workload}) {entry.get('title', '')}".strip()


def _cell(results: Results, workload: str, method: str, notes: list[str]) -> str:
    """Seconds per point, with a numbered note where it was timed on a subset."""
    entry = results.get(workload, method)
    if entry is None:
        return "n/a"
    text = seconds(_number(entry.get("seconds_per_point")))
    if entry.get("scaled"):
        notes.append(
            f"({workload}) {method}: timed on {entry.get('timed_points')} of "
            f"{entry.get('grid_points')} grid points (evenly spaced), scaled per point"
        )
        text += f" [{len(notes)}]"
    return text


def _ratio(value: float | None) -> str:
    """A ratio near or below 1, with two digits."""
    return "n/a" if value is None else f"{value:,.2f}×"


def _compile_seconds(results: Results, workload: str) -> float | None:
    entry = results.get(workload, "compiled")
    return None if entry is None else _number(entry.get("compile_seconds"))


def machine_section(results: Results) -> list[str]:
    machine, cpu = results.machine, _mapping(results.machine.get("cpu"))
    lines = ["## Machine", ""]
    lines.append(
        f"- CPU: {cpu.get('brand_raw', machine.get('processor', '?'))}, "
        f"{cpu.get('count', machine.get('os_cpu_count', '?'))} cores "
        f"({machine.get('usable_cpus', '?')} usable, torch threads "
        f"{machine.get('torch_num_threads', '?')}), {cpu.get('hz_advertised_friendly', '')}; "
        f"{machine.get('system', '')} {machine.get('release', '')}"
    )
    lines.append(
        f"- Python {machine.get('python_version', '?')}, torch "
        f"{machine.get('torch_version', '?')}, genni_ext {machine.get('genni_ext_version', '?')}"
    )
    commit = results.commit
    if commit.get("id"):
        dirty = " (with uncommitted changes)" if commit.get("dirty") else ""
        lines.append(f"- Run {results.datetime} at commit {str(commit['id'])[:10]}{dirty}")
    recorded = machine.get("genni_ext_build_info")
    lines.append(f"- `genni_ext.build_info()` during the run: `{json.dumps(recorded)}`")
    current = _current_build_info()
    if current is not None and current != recorded:
        lines.append(f"- `genni_ext.build_info()` now (differs): `{json.dumps(current)}`")
    if results.untimed:
        lines.append(
            f"- **{results.untimed} benchmarks were not timed** (--benchmark-disable): "
            "their numbers are single untimed calls"
        )
    return lines


def _current_build_info() -> object:
    try:
        import genni_ext
    except ImportError:
        return None
    return genni_ext.build_info()


def speed_section(results: Results) -> list[str]:
    notes: list[str] = []
    rows = []
    for workload in results.workloads():
        facts = _any(results, workload)
        rows.append(
            [
                _title(results, workload),
                count(facts.get("grid_points")),
                count(facts.get("probes")),
                _cell(results, workload, "fused", notes),
                _cell(results, workload, "torch", notes),
                _cell(results, workload, "compiled", notes),
                _cell(results, workload, "loop", notes),
                times(results.ratio(workload, "torch", "fused")),
                _ratio(results.ratio(workload, "compiled", "fused")),
                times(results.ratio(workload, "loop", "fused")),
                seconds(_compile_seconds(results, workload)),
            ]
        )
    header = (
        "workload",
        "grid points",
        "probes",
        "fused",
        "torch fallback",
        "torch.compile",
        "per-point loop",
        "fallback/fused",
        "compiled/fused",
        "loop/fused",
        "compile",
    )
    lines = [
        "## Seconds per grid point",
        "",
        "torch.compile: `torch.compile(vmap(J))` as a user writes it, on the torch backend's "
        "chunks, steady state; compile: its first pass over the grid less the steady pass "
        "(the compile, for every chunk length).",
        "",
    ]
    lines += table(header, rows)
    if notes:
        lines.append("")
        lines += [f"- [{index}] {note}" for index, note in enumerate(notes, start=1)]
    return lines


def throughput_section(results: Results) -> list[str]:
    roof = results.matmul_gflops()
    lines = [
        "## Useful forward GFLOP/s",
        "",
        "flops_per_sample (2 × multiply-adds of the Linear and Conv2d layers) × probes × "
        "grid points / seconds. Same-run `torch.matmul` 2048×2048 float32: "
        f"**{number(roof)} GFLOP/s**.",
        "",
    ]
    rows = []
    for workload in THROUGHPUT_WORKLOADS:
        fused = results.get(workload, "fused")
        if fused is None:
            continue
        rows.append(
            [
                _title(results, workload),
                count(fused.get("flops_per_sample")),
                number(results.gflops(workload, "fused")),
                f"{number(results.matmul_share(workload))} %",
                number(results.gflops(workload, "torch")),
                number(results.gflops(workload, "compiled")),
                f"{number(results.matmul_share(workload, 'compiled'))} %",
                number(results.gflops(workload, "loop"), 2),
            ]
        )
    header = (
        "workload",
        "flops/sample",
        "fused GFLOP/s",
        "fused % of matmul",
        "fallback GFLOP/s",
        "torch.compile GFLOP/s",
        "torch.compile % of matmul",
        "loop GFLOP/s",
    )
    return lines + table(header, rows)


def first_layer_section(results: Results) -> list[str]:
    rows = []
    for workload in results.workloads():
        affine, direct = (
            results.get(workload, "fused-affine"),
            results.get(workload, "fused-direct"),
        )
        if affine is None or direct is None:
            continue
        fused = results.get(workload, "fused") or {}
        ratio = results.ratio(workload, "fused-direct", "fused-affine")
        better = "n/a" if ratio is None else ("affine" if ratio > 1.0 else "direct")
        rows.append(
            [
                _title(results, workload),
                f"{affine.get('first_fan_in', '?')}",
                f"{affine.get('m', '?')}",
                str(fused.get("first_layer", "?")),
                seconds(_number(affine.get("seconds_per_point"))),
                seconds(_number(direct.get("seconds_per_point"))),
                times(ratio),
                better,
            ]
        )
    header = (
        "workload",
        "first-layer fan-in",
        "m",
        "sweep() picks",
        "affine s/point",
        "direct s/point",
        "direct/affine",
        "faster",
    )
    lines = [
        "## First layer: affine shortcut vs direct",
        "",
        '`genni_ext.engine.fused.fused_sweep(..., first_layer="affine" | "direct")` on the full '
        "grid; `sweep()` takes the shortcut when the first layer's fan-in is at least 10 (m + 1) "
        "(`genni_ext.engine.fused.uses_affine_first_layer`).",
        "",
    ]
    return lines + table(header, rows)


def _goal_text(goal: Goal) -> tuple[str, str]:
    if goal.measure == "% of matmul":
        return f"({goal.workload}) fused GFLOP/s vs same-run matmul", f"≥ {goal.target:g} %"
    baseline = {
        "fallback/fused": "torch fallback",
        "loop/fused": "per-point loop",
        "compiled/fused": "torch.compile steady state",
    }[goal.measure]
    return f"({goal.workload}) fused vs {baseline}", f"≥ {goal.target:g}×"


def _margin(goal: Goal, value: float) -> str:
    """How far over or under the target, and what speed-up of fused a miss needs."""
    share = goal.measure == "% of matmul"
    shown = f"{value:.1f} %" if share else f"{value:,.2f}×"
    if value >= goal.target:
        return f"{shown}: {value / goal.target:.2f}× the target"
    gap = (
        f"{goal.target - value:.1f} points" if share else f"{100 * (1 - value / goal.target):.0f} %"
    )
    return f"{shown}: short by {gap}; fused needs to be {goal.target / value:.2f}× faster"


def goals_section(results: Results) -> list[str]:
    rows = []
    for goal in GOALS:
        name, target = _goal_text(goal)
        value = results.measure(goal)
        if value is None:
            rows.append([name, target, "n/a", "not measured"])
            continue
        status = "**met**" if value >= goal.target else "**missed**"
        rows.append([name, target, _margin(goal, value), status])
    return ["## Goals", "", *table(("goal", "target", "measured", "status"), rows)]


def search_section(results: Results) -> list[str]:
    """Batched search of K starts against the same K one after another (same steps, seeds)."""
    batched, sequential = results.search.get("batched"), results.search.get("sequential")
    facts = batched or sequential or {}
    fast = None if batched is None else _number(batched.get("seconds"))
    slow = None if sequential is None else _number(sequential.get("seconds"))
    ratio = None if fast is None or slow is None or not fast else slow / fast
    goal = _number(facts.get("goal")) or SEARCH_GOAL
    lines = [
        "## Search",
        "",
        f"`genni_ext.search` on {facts.get('model', '?')}: {count(facts.get('starts'))} starts "
        f"trained together (batched, `vmap` of `grad`) vs the same starts trained one after "
        f"another (sequential), {count(facts.get('steps'))} steps, {count(facts.get('probes'))} "
        f"probes, batch {count(facts.get('batch_size'))}, lr {facts.get('lr', '?')}, same "
        "seeds; fastest round.",
        "",
    ]
    rows = [
        [
            seconds(fast),
            seconds(slow),
            times(ratio),
            f"≥ {goal:g}×",
            "not measured"
            if ratio is None
            else ("**met**" if ratio >= goal else "**missed**")
            + f" ({ratio / goal:.2f}× the goal)",
        ]
    ]
    header = ("batched", "sequential", "sequential/batched", "goal", "status")
    return lines + table(header, rows)


def report(data: Mapping[str, object]) -> str:
    results = Results(data)
    sections = (
        machine_section(results),
        speed_section(results),
        throughput_section(results),
        first_layer_section(results),
        goals_section(results),
    )
    if results.search:
        sections = (*sections, search_section(results))
    return "\n\n".join("\n".join(section) for section in sections) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="file written by pytest --benchmark-json=…")
    args = parser.parse_args(argv)
    try:
        data = json.loads(args.json.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        print(f"cannot read {args.json}: {error}", file=sys.stderr)
        return 2
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        print(f"{args.json} is not a pytest-benchmark JSON (no 'benchmarks' list)", file=sys.stderr)
        return 2
    sys.stdout.write(report(data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
