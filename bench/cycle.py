"""Prints the cycle's compute time (median, p99) for 3 and 20 symbols, and the steady memory of run.py."""
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vigil import cli, config  # noqa: E402

SYMBOLS20 = ["BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE", "AVAX", "LINK", "DOT", "TRX", "LTC",
             "BCH", "NEAR", "APT", "ARB", "OP", "SUI", "ATOM", "FIL"]


def make_cfg(tmp, n_symbols, cycles):
    path = Path(tmp) / f"bench{n_symbols}.cfg"
    text = (ROOT / "vigil.cfg").read_text()
    symbols = ", ".join(f"{s}/USDT" for s in SYMBOLS20[:n_symbols])
    path.write_text(text.replace("symbols = BTC/USDT, ETH/USDT, SOL/USDT", f"symbols = {symbols}")
                    .replace("db = vigil.db", f"db = {tmp}/bench{n_symbols}.db")
                    .replace("console = true", "console = false"))
    return path


def cycle_times(path, cycles):
    cfg = config.load(path)
    orch = cli.build(cfg)

    async def go():
        await orch.source.start()
        out = []
        for _ in range(cycles):
            t = time.perf_counter()
            await orch.cycle()
            out.append((time.perf_counter() - t) * 1000)
        await orch.source.close()
        return out
    return asyncio.run(go())


def rss_of_run(path, seconds):
    """Starts python run.py at a 0.05 s heartbeat and samples its resident memory."""
    proc = subprocess.Popen([sys.executable, "run.py", "--config", str(path), "--interval", "0.05"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    samples = []
    try:
        end = time.time() + seconds
        while time.time() < end:
            time.sleep(0.5)
            with open(f"/proc/{proc.pid}/status") as f:
                samples += [int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS")]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return samples


def main():
    cycles = int(os.environ.get("BENCH_CYCLES", "2000"))
    with tempfile.TemporaryDirectory() as tmp:
        for n in (3, 20):
            times = cycle_times(make_cfg(tmp, n, cycles), cycles)[100:]  # skip warm-up
            times.sort()
            print(f"{n:>2} symbols: cycle median {statistics.median(times):.2f} ms, "
                  f"p99 {times[int(len(times) * 0.99)]:.2f} ms over {len(times)} cycles (target < 20 ms for 20)")
        samples = rss_of_run(make_cfg(tmp, 3, 0), float(os.environ.get("BENCH_RSS_SECONDS", "20")))
        print(f"run.py resident memory: start {samples[0]:.1f} MB, steady {samples[-1]:.1f} MB, "
              f"max {max(samples):.1f} MB (target < 120 MB; freqtrade idles at about 350 MB)")


if __name__ == "__main__":
    main()
