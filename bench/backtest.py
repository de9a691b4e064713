"""Backtests one year of 1-minute candles through the full pipeline; prints CPU time, wall time and peak memory.

usage: python bench/backtest.py [DATA_DIR]   (default: ../shared/data/synth beside the repository)
Each figure is the whole `run.py backtest` process, start to exit (loading the files included), as the peer
is timed. RUN_PEER=1 also runs the peer (freqtrade) on the same data in the same run and prints the ratios:
CPU time (user + system, steady on a busy machine) beside wall time.
"""
import json
import os
import re
import resource
import runpy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEER = ROOT.parent / "shared" / "peer-bench" / "freqtrade"


def ours(data_dir, symbols):
    """(wall seconds, CPU seconds, peak RSS MB, report) of one backtest process."""
    with tempfile.TemporaryDirectory() as tmp:
        t, before = time.time(), resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run([sys.executable, __file__, "--child", "--config", str(ROOT / "vigil.cfg"), "backtest",
                              "--data", str(data_dir),
                              "--symbols", *symbols, "--json", "--equity-csv", os.path.join(tmp, "equity.csv")],
                             cwd=tmp, capture_output=True, text=True)
        wall, after = time.time() - t, resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode:
        sys.exit(f"backtest failed: {out.stderr[-2000:]}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    peak_kb = int(out.stderr.strip().splitlines()[-1])  # ru_maxrss is in KB on Linux
    return wall, cpu, peak_kb / 1024, json.loads(out.stdout)


def peer(pairs):
    """(wall seconds, CPU seconds, peak RSS MB) of freqtrade as its run script times it, or None."""
    run = subprocess.run(["bash", str(PEER / "run.sh"), str(pairs)],
                         capture_output=True, text=True)
    text = run.stdout + run.stderr
    times = PEER / "run" / "time.txt"  # the script prints wall and memory; its CPU time is in the file it writes
    text += times.read_text() if times.exists() else ""
    wall = re.search(r"Elapsed.*?: (?:(\d+):)?(\d+):([\d.]+)", text)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    cpu = [re.search(rf"{kind} time \(seconds\): ([\d.]+)", text) for kind in ("User", "System")]
    if not wall or not rss or not all(cpu):
        print(f"peer run failed: {text[-500:]}")
        return None
    return (int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3)),
            sum(float(m.group(1)) for m in cpu), int(rss.group(1)) / 1024)


def main():
    data_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data" / "synth"
    for pairs, symbols in ((1, ["BTC/USDT"]), (2, ["BTC/USDT", "ETH/USDT"])):
        wall, cpu, mb, report = ours(data_dir, symbols)
        b = report["backtest"]
        candles = sum(n for by_symbol in b["candles"].values() for n in by_symbol.values())
        print(f"{'+'.join(s.split('/')[0] for s in symbols)}: {candles:,} candles, {b['cycles']:,} cycles "
              f"({b['decided']:,} decided) in {wall:.1f} s wall, {cpu:.1f} s CPU (the backtest loop "
              f"{b['seconds']:.1f} s) = {candles / wall:,.0f} candles/s, peak RSS {mb:.0f} MB", flush=True)
        if os.environ.get("RUN_PEER"):
            theirs = peer(pairs)
            if theirs:
                print(f"  freqtrade: {theirs[0]:.1f} s wall, {theirs[1]:.1f} s CPU, {theirs[2]:.0f} MB; "
                      f"vigil/freqtrade CPU {cpu / theirs[1]:.2f}x, wall {wall / theirs[0]:.2f}x, "
                      f"memory {mb / theirs[2]:.3f}x", flush=True)


def child(args):
    """Runs `run.py ARGS` in this process, then prints its peak memory (KB) as stderr's last line."""
    sys.argv = [str(ROOT / "run.py"), *args]
    sys.path.insert(0, str(ROOT))
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    finally:
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)


if __name__ == "__main__":
    child(sys.argv[2:]) if sys.argv[1:2] == ["--child"] else main()
