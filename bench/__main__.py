"""``python -m bench [NAME ...]``: run the benchmarks named (``BENCHMARKS``), or all of them.

The markdown table goes to stdout and to
``bench/results/latest.md``; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from bench import (
    backtest,
    batch,
    cohort,
    coldstart,
    consumer,
    handler,
    latency,
    mcp,
    memory,
    query,
    scale,
)
from bench._harness import ROOT, Row, Stack, cpu_marks, other_cpu, progress

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

BENCHMARKS: dict[str, Callable[[Stack], Coroutine[Any, Any, list[Row]]]] = {
    "query": query.run,
    "consumer": consumer.run,
    "latency": latency.run,
    "memory": memory.run,
    "cohort": cohort.run,
    "backtest": backtest.run,
    "batch": batch.run,
    "mcp": mcp.run,
    "coldstart": coldstart.run,
    "scale": scale.run,
    "handler": handler.run,
}
RESULTS = ROOT / "bench" / "results" / "latest.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=" | ".join(BENCHMARKS))
    held_out = parser.add_argument_group(
        "backtest", "report this held-out set instead of the default ones (seed 7 and 314159)"
    )
    held_out.add_argument("--seed", type=int, help="generator seed (not the tuning seed)")
    held_out.add_argument("--students", type=int, default=600)
    held_out.add_argument("--days", type=int, default=84)
    held_out.add_argument("--noise", type=_span, default=(0.08, 0.25), help="LO-HI event sd")
    held_out.add_argument("--active", type=_span, default=(0.25, 0.8), help="LO-HI active days")
    args = parser.parse_args(argv)
    names = args.names or list(BENCHMARKS)
    if args.seed is not None:
        s = backtest.Settings(args.seed, args.students, args.days, args.noise, args.active)
        try:
            backtest.configure(s)
        except ValueError as e:
            parser.error(str(e))
    if unknown := [n for n in names if n not in BENCHMARKS]:
        parser.error(f"unknown benchmark {', '.join(unknown)}: choose from {', '.join(BENCHMARKS)}")

    # SIGTERM (and SIGINT, even where a shell ignored it for a background job) take the
    # Ctrl-C way out: through every `finally`, stopping the children.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    started = time.monotonic()
    rows: list[Row] = []
    noise: list[str] = []
    try:
        with Stack() as stack:
            for name in names:
                progress(f"{name}: start")
                before = cpu_marks(stack)
                rows += asyncio.run(BENCHMARKS[name](stack))
                after = cpu_marks(stack)
                foreign, stolen = other_cpu(before, after)
                noise.append(f"{name} {foreign * 100:.0f}%/{stolen * 100:.0f}%")
                progress(f"{name}: done in {after[0] - before[0]:.0f}s")
    except KeyboardInterrupt:
        progress("interrupted: servers stopped")
        return 130
    report = _report(rows, names, time.monotonic() - started, noise)
    print(report)
    tmp = RESULTS.with_suffix(".md.tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(report)
    tmp.replace(RESULTS)
    progress(f"written to {RESULTS.relative_to(ROOT)}")
    return 0


def _span(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition("-")
    try:
        return float(lo), float(hi)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO-HI, got {text!r}") from None


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _report(rows: list[Row], names: list[str], seconds: float, noise: list[str]) -> str:
    header = "| benchmark | figure | measured | baseline (same run) | ratio | target | met |"
    lines = [
        "# Mastery Engine benchmarks",
        "",
        f"Ran: {', '.join(names)} in {seconds:.0f} s on {_machine()}.",
        f"Environment overrides: {_overrides()}.",
        "CPU taken by other processes / stolen by the hypervisor, % of all CPUs, during each: "
        f"{', '.join(noise)} (more than a few % and the figures are not comparable).",
        "",
        header,
        "|---|---|---:|---:|---:|---|---|",
    ]
    for r in rows:
        met = "-" if r.met is None else ("yes" if r.met else "**no**")
        lines.append(
            f"| {r.benchmark} | {r.figure} | {r.value} | {r.baseline} | {r.ratio} "
            f"| {r.target} | {met} |"
        )
    lines += ["", "Method: bench/README.md. Figures vary run to run on a shared machine.", ""]
    return "\n".join(lines)


def _overrides() -> str:
    """Variables that change what the children run or how (they inherit the environment)."""
    names = sorted(k for k in os.environ if k.startswith("MASTERY_") or k == "PYTHONPATH")
    return ", ".join(f"{k}={os.environ[k]}" for k in names) or "none"


def _machine() -> str:
    redis = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.split()
    version = next((w[2:] for w in redis if w.startswith("v=")), "?")
    return (
        f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), "
        f"{platform.machine()} {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, redis-server {version}, "
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}"
    )


if __name__ == "__main__":
    sys.exit(main())
