"""Choose the intervention-flag margins on the backtest's tuning seed (not a benchmark).

``python -m bench._flag_grid``: every pair of ``below_margin`` and ``drop_margin`` on a
grid (0.0-3.0, step 0.25) is evaluated with ``bench.backtest.evaluate`` on ``TUNING``
only, the rest of the forecast at its defaults. The rule, fixed before the run: the
largest recall with precision >= ``FLOOR`` (2 points above the 90 % target, room for the
held-out sets); ties go to the higher precision, then to the larger margins. The margins
affect the flags only, so the MAE and the reliability table are those of the defaults.
Prints both grids and the choice; ~6 minutes on 2 cores (one row of the grid per core). Held-out
sets are never read.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from bench.backtest import TUNING, describe, evaluate, simulate
from mastery.domain import DEFAULT_FORECAST

FLOOR = 0.92
GRID = tuple(i * 0.25 for i in range(13))


def _row(below: float) -> dict[tuple[float, float], tuple[int, int, int]]:
    students = simulate(TUNING)
    out = {}
    for drop in GRID:
        f = dataclasses.replace(DEFAULT_FORECAST, below_margin=below, drop_margin=drop)
        r = evaluate(students, TUNING, f)
        out[below, drop] = (r.flagged, r.flags_right, r.at_risk)
    return out


def main() -> int:
    print(f"tuning set: {describe(TUNING)}; precision floor {FLOOR:.0%}", file=sys.stderr)
    found: dict[tuple[float, float], tuple[int, int, int]] = {}
    started = time.monotonic()
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        for below, row in zip(GRID, pool.map(_row, GRID), strict=True):
            found |= row
            print(
                f"  below_margin {below:.2f} done, {time.monotonic() - started:.0f} s",
                file=sys.stderr,
            )

    def share(a: int, b: int) -> float:
        return a / b if b else float("nan")

    for name, pick in (
        ("precision", lambda n, k, _: share(k, n)),
        ("recall", lambda _, k, a: share(k, a)),
    ):
        print(f"\n{name} (rows below_margin, columns drop_margin)")
        print("below\\drop " + " ".join(f"{d:6.2f}" for d in GRID))
        for b in GRID:
            print(f"{b:10.2f} " + " ".join(f"{pick(*found[b, d]):6.1%}" for d in GRID))
    ok = [(k, n, a, key) for key, (n, k, a) in found.items() if n and k / n >= FLOOR]
    if not ok:
        print(f"\nno pair reaches {FLOOR:.0%} precision")
        return 1
    k, n, a, (b, d) = max(ok, key=lambda x: (x[0] / x[2], x[0] / x[1], sum(x[3]), x[3]))
    print(
        f"\nchosen: below_margin {b:g}, drop_margin {d:g}: "
        f"precision {k / n:.1%} ({k:,} of {n:,} flagged), recall {k / a:.1%} (of {a:,} at risk)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
