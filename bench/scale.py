"""Prints paper mode at 300 symbols x 3 venues (binance, bybit, okx) against the fake venues in another process,
100 ms added to every public REST request and WebSocket push: start-up (every stream backfilled over ccxt's
rate-limited REST), the data step (source.tick + candles + feeds) in round trips, the cycle's compute (the cycle
minus its data step) median and p99, resident memory, and WebSocket subscribe requests and connections per venue.
Targets: data step <= 1.5 round trips, compute median < 100 ms, memory < 200 MB. SCALE_CYCLES=10 shortens it."""
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from virtual_venue import VirtualVenues, config, percentile  # noqa: E402
from vigil import cli  # noqa: E402
from vigil import config as vigil_config  # noqa: E402
from vigil.paper_source import get_json  # noqa: E402

BASES = [f"S{i:03d}" for i in range(300)]
VENUES = ["binance", "bybit", "okx"]
KLINES = {"binance": "/fapi/v1/klines", "bybit": "/v5/market/kline", "okx": "/api/v5/market/"}
FUNDING = {"binance": "/fapi/v1/premiumIndex", "bybit": "/v5/market/tickers", "okx": "/api/v5/public/funding-rate"}
LATENCY = 0.1
WARMUP = 2  # cycles after start-up: the first stores every stream's history in the flight record


def memory_mb():
    with open("/proc/self/status") as f:
        return {line.split(":")[0]: int(line.split()[1]) / 1024 for line in f if line.startswith(("VmRSS", "VmHWM"))}


async def measure(orch, venue, cycles):
    source, data, out = orch.source, [0.0], {"cycles": [], "records": [], "rss": []}
    tick, candles, feeds, cycle = source.tick, source.candles, source.feeds, orch.cycle

    def timed(step):
        """step (a coroutine function), its time added to the cycle's data step."""
        async def run(*args):
            t = time.perf_counter()
            try:
                return await step(*args)
            finally:
                data[0] += time.perf_counter() - t
        return run

    def timed_candles():
        t = time.perf_counter()
        candles_now = candles()
        data[0] += time.perf_counter() - t
        return candles_now

    async def timed_cycle():
        data[0], t = 0.0, time.perf_counter()
        rec = await cycle()
        if "startup_s" in out:
            out["cycles"].append((time.perf_counter() - t, data[0]))
            out["records"].append(rec)
            out["rss"].append(memory_mb()["VmRSS"])
        return rec

    def hook(rec):
        if "startup_s" in out:
            venue.jump()
        if len(out["cycles"]) + 1 >= cycles + WARMUP:  # this one is appended when it returns
            orch.stop()

    async def startup():
        t = time.perf_counter()
        history = orch.cfg["market"]["history"]
        while not all(len(s.candles()) >= history for s in source.streams):
            await asyncio.sleep(0.1)
        out["startup_s"] = time.perf_counter() - t
        rtts = []
        for _ in range(20):
            t = time.perf_counter()
            await get_json(f"{venue.url}/fng/", 5)
            rtts.append(time.perf_counter() - t)
        out["rtt"] = statistics.median(rtts)
        venue.jump()  # from here on, a candle closes LEAD seconds after each cycle

    source.tick, source.candles, source.feeds, orch.cycle = timed(tick), timed_candles, timed(feeds), timed_cycle
    orch.on_cycle.append(hook)
    waiter = asyncio.create_task(startup())
    await orch.run()
    await waiter
    return out


def main():
    cycles = int(os.environ.get("SCALE_CYCLES", "50"))
    symbols = [f"{b}/USDT" for b in BASES]
    with VirtualVenues(BASES, VENUES, LATENCY) as venue, tempfile.TemporaryDirectory() as tmp:
        cfg = vigil_config.load(config(Path(tmp) / "scale.cfg", venue, symbols, VENUES, vigil="mode = paper\n"))
        orch = cli.build(cfg, venue.clock)
        out = asyncio.run(measure(orch, venue, cycles))
        memory = memory_mb()
        subscribes, klines, funding = venue.ask("subscribes"), venue.ask(KLINES), venue.ask(FUNDING)
    rtt = out["rtt"]
    measured = out["cycles"][WARMUP:]
    data = [d / rtt for _, d in measured]
    compute = [(total - d) * 1000 for total, d in measured]
    decision = [r["latency_ms"]["decision"] for r in out["records"][WARMUP:] if r["latency_ms"]]
    down = {k: e for r in out["records"][WARMUP:] for k, e in r["feeds"].items() if e and k in ("candles", "funding")}
    print(f"paper, {len(BASES)} symbols x {len(VENUES)} venues, {LATENCY * 1000:.0f} ms added per REST request and "
          f"WebSocket push, {len(measured)} cycles; one round trip {rtt * 1000:.0f} ms")
    print(f"start-up: every stream backfilled in {out['startup_s']:.1f} s; REST candle requests " + ", ".join(
        f"{v} {n} in {span:.1f} s ({n / max(span, 1e-9):.1f}/s)" for v, (n, span) in klines.items()))
    print("WebSocket (subscribe requests, connections, topics): " + ", ".join(
        f"{v} {subscribes[v]}" for v in VENUES))
    print(f"funding, {len(BASES)} symbols: " + ", ".join(
        f"{v} {n / orch.cycle_n:.2f}" for v, (n, _) in funding.items()) + " requests a cycle")
    print(f"data step: median {statistics.median(data):.2f}, max {max(data):.2f} round trips (target <= 1.5)")
    print(f"compute: median {statistics.median(compute):.1f} ms, p99 {percentile(compute, 0.99):.1f} ms (target median "
          f"< 100 ms); candle close -> decision median {statistics.median(decision):.0f} ms")
    print(f"resident memory: {out['rss'][WARMUP]:.0f} MB after start-up, {memory['VmRSS']:.0f} MB after "
          f"{len(measured)} more cycles (target < 200 MB); peak {memory['VmHWM']:.0f} MB")
    if down:
        print(f"feeds down in some cycle: {down}")
    ok = statistics.median(data) <= 1.5 and statistics.median(compute) < 100 and memory["VmRSS"] < 200 and not down
    print("PASS" if ok else "FAIL")


if __name__ == "__main__":
    main()
