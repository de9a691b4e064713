"""Prints the paper data step's wall time per cycle for 3 venues x 20 symbols with 100 ms injected latency,
as a ratio to one round trip (streams already hold the candles)."""
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fake_venue import MIN, FakeVenues  # noqa: E402
from vigil import config  # noqa: E402
from vigil.paper_source import get_json  # noqa: E402
from vigil.paper_source import PaperSource  # noqa: E402

BASES = ["BTC", "ETH", "SOL", "BNB", "XRP", "ADA", "DOGE", "AVAX", "LINK", "DOT", "TRX", "LTC", "BCH", "NEAR",
         "APT", "ARB", "OP", "SUI", "ATOM", "FIL"]
LATENCY = 0.1


async def main():
    cycles = int(os.environ.get("FEED_CYCLES", "20"))
    now = int(time.time() * 1000) // MIN * MIN
    with FakeVenues(BASES) as fake, tempfile.TemporaryDirectory() as tmp:
        for venue in ("binance", "bybit", "okx"):
            for base in BASES:
                fake.funding[(venue, base)] = (0.0001, now + 3_600_000, 8.0)
                if venue != "okx":
                    fake.seed(venue, base, now - 400 * MIN, 400)
        path = Path(tmp) / "b.cfg"
        path.write_text("[vigil]\nmode = paper\n[market]\nsymbols = " + ", ".join(f"{b}/USDT" for b in BASES) +
                        "\n" + "".join(f"[venue.{v}]\nrest_url = {fake.url}\nws_url = {fake.ws}\n"
                                       for v in ("binance", "bybit", "okx")) +
                        f"[feeds]\nfear_greed_url = {fake.url}/fng/\n")
        source = PaperSource(config.load(path))
        await source.start()
        while not all(len(s.candles()) for s in source.streams):
            await asyncio.sleep(0.05)
        await source.feeds(now)  # markets loaded, Fear & Greed cached: the steady state of a running loop
        fake.latency = LATENCY
        t = time.perf_counter()
        await get_json(f"{fake.url}/fng/", 5)
        round_trip = time.perf_counter() - t
        steps = []
        for _ in range(cycles):
            t = time.perf_counter()
            source.candles()
            feeds = await source.feeds(int(time.time() * 1000))
            steps.append(time.perf_counter() - t)
            assert feeds["funding"]["ok"] and len(feeds["funding"]["data"]) == len(BASES), feeds["funding"]["error"]
        await source.close()
    med = statistics.median(steps)
    print(f"data step, 3 venues x 20 symbols, {LATENCY * 1000:.0f} ms injected per request: median "
          f"{med * 1000:.0f} ms, max {max(steps) * 1000:.0f} ms; one round trip {round_trip * 1000:.0f} ms; "
          f"ratio {med / round_trip:.2f} (target < 1.5)")


if __name__ == "__main__":
    asyncio.run(main())
