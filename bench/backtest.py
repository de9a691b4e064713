"""Backtests one year of 1-minute candles through the full pipeline; prints candles/s and peak memory.

usage: python bench/backtest.py [DATA_DIR]   (default: ../shared/data/synth beside the repository)
RUN_PEER=1 also runs the peer (freqtrade) on the same data in the same run and prints the ratios.
"""
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vigil import backtest, config  # noqa: E402


def run(cfg, data_dir, symbols):
    data, rates = backtest.load(cfg, data_dir, symbols)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.time()
        out = backtest.run(cfg, data, rates, os.path.join(tmp, "bench.db"), None, progress=sys.stderr)
        wall = time.time() - t
    candles = sum(len(c) for c in data.values())
    return candles, wall, out


def main():
    data_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data" / "synth"
    results = []
    for symbols in (["BTC/USDT"], ["BTC/USDT", "ETH/USDT"]):
        # Each pair-set in a fresh process so peak memory is its own.
        if os.environ.get("BENCH_CHILD"):
            break
        code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); sys.argv = ['x', {str(data_dir)!r}];"
                f"import bench.backtest as b; b.child({symbols!r})")
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                             env=dict(os.environ, BENCH_CHILD="1"))
        sys.stderr.write(out.stderr[-300:])
        line = out.stdout.strip().splitlines()[-1]
        print(line, flush=True)
        results.append(line)
    if os.environ.get("RUN_PEER"):
        for pairs, line in zip((1, 2), results):
            peer = subprocess.run(["bash", str(ROOT.parent / "shared" / "peer-bench" / "freqtrade" / "run.sh"),
                                   str(pairs)], capture_output=True, text=True)
            wall = re.search(r"Elapsed.*?: (?:(\d+):)?(\d+):([\d.]+)", peer.stdout + peer.stderr)
            rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", peer.stdout + peer.stderr)
            if not wall or not rss:
                print(f"peer run failed: {(peer.stdout + peer.stderr)[-500:]}")
                continue
            peer_s = int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3))
            peer_mb = int(rss.group(1)) / 1024
            ours_s = float(re.search(r"in ([\d.]+) s", line).group(1))
            ours_mb = float(re.search(r"peak RSS ([\d.]+) MB", line).group(1))
            print(f"{pairs} pair(s): freqtrade {peer_s:.1f} s, {peer_mb:.0f} MB; vigil/freqtrade time "
                  f"{ours_s / peer_s:.2f}x, memory {ours_mb / peer_mb:.2f}x")


def child(symbols):
    cfg = config.load(ROOT / "vigil.cfg")
    candles, wall, out = run(cfg, sys.argv[1], symbols)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{'+'.join(s.split('/')[0] for s in symbols)}: {candles:,} candles, {out['backtest']['cycles']:,} cycles "
          f"in {wall:.1f} s = {candles / wall:,.0f} candles/s, peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
