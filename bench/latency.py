"""Prints candle close -> decision and candle close -> first order sent (p50, p99) over 200 live cycles against the
fake venues: each 1-minute kline pushed over WebSocket 100 ms after its close, 100 ms per public REST request,
funding_arb opening and closing a Binance/Bybit spread in turns (Bybit's funding is wide every other candle) with
its orders sent to the fake's REST (reconciliation, which runs between cycles, is not asked); target first order
p50 < 1 s, p99 < 2 s. LATENCY_CYCLES=50 shortens it."""
import asyncio
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from virtual_venue import VirtualVenues, config, percentile  # noqa: E402
from vigil import cli  # noqa: E402
from vigil import config as vigil_config  # noqa: E402

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
WARMUP = 3  # cycles before the streams and clients settle (the first runs at start, not at a close)
LATENCY = 0.1
# One fake serves both venues, so a spread's two legs net to nothing there and its wallets never move:
# reconciliation, which runs between cycles and adds nothing to the figures, would halt on that.
NO_RECONCILE = "[live]\nreconcile_every = 100000\n"


async def measure(orch, venue, wanted):
    """The latency of every cycle that sent an order, until there are wanted of them."""
    seen = []

    def hook(rec):
        venue.jump()
        if rec["n"] > WARMUP and rec["latency_ms"] and rec["latency_ms"]["first_order"] is not None:
            seen.append(rec["latency_ms"])
        if len(seen) >= wanted or rec["n"] >= 2 * wanted + WARMUP:
            orch.stop()
    orch.on_cycle.append(hook)
    await orch.run()
    return seen


def main():
    wanted = int(os.environ.get("LATENCY_CYCLES", "200"))
    for venue_name in ("BINANCE", "BYBIT"):
        os.environ[f"{venue_name}_API_KEY"], os.environ[f"{venue_name}_API_SECRET"] = "TESTKEY", "SECRETKEY123456"
    bases = [s.split("/")[0] for s in SYMBOLS]
    with VirtualVenues(bases, ["binance", "bybit"], LATENCY, flip_funding=True) as venue, \
            tempfile.TemporaryDirectory() as tmp:
        cfg = vigil_config.load(config(Path(tmp) / "latency.cfg", venue, SYMBOLS, ["binance", "bybit"],
                                       vigil="mode = live\n", rest=NO_RECONCILE))
        orch = cli.build(cfg, venue.clock)
        seen = asyncio.run(measure(orch, venue, wanted))
        orders = venue.ask("orders")
        if orch.control.halt:  # trading stopped: the figures cover the cycles before it
            print(f"halted at cycle {orch.cycle_n}: {orch.control.halt['reason']}")
    decision = [x["decision"] for x in seen]
    first = [x["first_order"] for x in seen]
    ok = len(seen) >= wanted and percentile(first, 0.5) < 1000 and percentile(first, 0.99) < 2000
    print(f"live, {len(SYMBOLS)} symbols on binance + bybit, settle_s {cfg['vigil']['settle_s']}: {len(seen)} of "
          f"{orch.cycle_n - WARMUP} cycles after warm-up sent orders; {orders} order requests reached the fake venue")
    print(f"candle close -> decision: p50 {percentile(decision, 0.5):.0f} ms, p99 {percentile(decision, 0.99):.0f} ms")
    print(f"candle close -> first order sent: p50 {percentile(first, 0.5):.0f} ms, p99 {percentile(first, 0.99):.0f} "
          f"ms (target p50 < 1000 ms, p99 < 2000 ms over {wanted} cycles): {'PASS' if ok else 'FAIL'}")


if __name__ == "__main__":
    main()
