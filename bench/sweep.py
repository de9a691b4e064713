"""Prints the wall time of an 8-point sweep run across the cores against the same 8 points one after another
(train and test period each), as a ratio measured in one run, and checks both gave the same figures.

usage: python bench/sweep.py [DATA_DIR]   (default: ../shared/data/synth beside the repository)
SWEEP_DAYS sets the span (default 30 days of 1-minute BTC candles; 70% train, 30% test).
"""
import datetime
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vigil import backtest, config  # noqa: E402
from vigil.schemas import TS  # noqa: E402

GRID = ["momentum.range_bars=20,40", "risk.risk_per_trade=0.003,0.005", "mean_reversion.entry_z=2.0,2.5"]


def main():
    data_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data" / "synth"
    days = int(os.environ.get("SWEEP_DAYS", "30"))
    cfg = config.load(ROOT / "vigil.cfg")
    end = datetime.date(2025, 1, 1) + datetime.timedelta(days=days)
    data, rates = backtest.load(cfg, data_dir / "BTCUSDT-1m-2025.csv.gz", ["BTC/USDT"], "2025-01-01", str(end))
    c = data[cfg["market"]["trade_venue"]]["BTC/USDT"]
    split = int(c[0, TS] + (c[-1, TS] - c[0, TS]) * 7 // 10)
    points = backtest.grid(cfg, GRID)
    jobs = os.cpu_count()
    timings = {}
    for name, n in (("one after another", 1), (f"across {jobs} processes", jobs)):
        t = time.perf_counter()
        timings[name] = (backtest.sweep(cfg, data, rates, points, split, "net_pnl", jobs=n), time.perf_counter() - t)
        print(f"{len(points)} points x 2 periods, {name}: {timings[name][1]:.1f} s", flush=True)
    (alone, t1), (together, tn) = timings.values()
    same = sorted(map(repr, alone)) == sorted(map(repr, together))
    print(f"sweep / sequential wall time: {tn / t1:.2f}x (target < 0.6x on 2 cores); same figures: {same}")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
