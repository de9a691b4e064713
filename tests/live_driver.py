"""Executes a fixed set of intended spreads (Binance long, Bybit short), or of directional trades with stops
the venues hold, against two fake venues; the crash tests kill and restart it, and it prints what
reconciliation then finds."""
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vigil import venues  # noqa: E402
from vigil.executor import Executor  # noqa: E402
from vigil.live_broker import LiveBroker, reconcile  # noqa: E402
from vigil.schemas import ORDER_WORKING  # noqa: E402
from vigil.storage import Storage  # noqa: E402

NOW = 1_700_000_000_000


def intents(venue=None):
    """Three spreads, two legs each (on one venue, or Binance long and Bybit short): six orders with fixed ids."""
    out = []
    for k, symbol in enumerate(["BTC/USDT", "ETH/USDT", "BTC/USDT"]):
        legs = [{"venue": venue or v, "symbol": symbol, "side": side, "market": "swap", "qty": 0.5 + k,
                 "price": 100.0, "notional": 100.0 * (0.5 + k)} for v, side in (("binance", "buy"), ("bybit", "sell"))]
        proposal = {"id": f"{k + 1}:funding_arb:{symbol}:open", "strategy": "funding_arb", "symbol": symbol,
                    "side": "buy", "kind": "spread", "intent": "open", "position_id": None,
                    "legs": [{k2: leg[k2] for k2 in ("venue", "symbol", "side", "market")} for leg in legs],
                    "confidence": 1.0, "entry": 100.0, "stop": None, "target": None, "max_hold_s": 0,
                    "reason": "crash test", "created_at": NOW}
        out.append((k + 1, {"proposal": proposal, "legs": legs, "checks": []}))
    return out


def stopped_intents():
    """Four directional trades with stops, two per venue, one long and one short on each."""
    out = []
    for k, (venue, symbol, side) in enumerate([("binance", "BTC/USDT", "buy"), ("bybit", "BTC/USDT", "sell"),
                                               ("binance", "ETH/USDT", "sell"), ("bybit", "ETH/USDT", "buy")]):
        stop = 90.0 if side == "buy" else 110.0
        proposal = {"id": f"{k + 1}:momentum:{symbol}", "strategy": "momentum", "symbol": symbol, "side": side,
                    "kind": "directional", "intent": "open", "position_id": None,
                    "legs": [{"venue": venue, "symbol": symbol, "side": side, "market": "swap"}], "confidence": 1.0,
                    "entry": 100.0, "stop": stop, "target": None, "max_hold_s": 0, "reason": "crash test",
                    "created_at": NOW}
        leg = {"venue": venue, "symbol": symbol, "side": side, "market": "swap", "qty": 0.5 + k, "price": 100.0,
               "notional": 100.0 * (0.5 + k)}
        out.append((k + 1, {"proposal": proposal, "legs": [leg], "checks": []}))
    return out


async def main(db_path, binance_url, bybit_url, stops=False):
    clients = {}
    for venue, url in (("binance", binance_url), ("bybit", bybit_url)):
        clients[venue] = venues.client({f"venue.{venue}": {"rest_url": url, "ws_url": ""}}, venue, 1.0,
                                       throttled=False)
        clients[venue].apiKey, clients[venue].secret = "TESTKEY", "SECRETKEY123456"
    db = Storage(db_path, durable=True)
    # a short window: an order the kill left unsent is proven absent within one patient lookup
    executor = Executor(db, LiveBroker(clients, patience_s=2.0, window_s=0.5, missing_lookups=3), lambda: False,
                        venue_stops=stops)
    try:
        await executor.recover(0, NOW)  # what a crash left working is asked about and booked first
        for cycle, trade in stopped_intents() if stops else intents():
            await executor.open(trade, cycle, NOW)  # the same intentions again: nothing sent twice
        for _ in range(10):
            # resting stops are working by design; one a kill left unsent is proven absent within 0.5 s
            if not [o for o in db.orders(statuses=ORDER_WORKING) if o["type"] != "venue_stop" or o["missing"]]:
                break
            await executor.follow(5, NOW)
            await asyncio.sleep(0.2 * stops)
        problems, _, _ = await reconcile(clients, db, ["BTC/USDT"], 1e9)
    finally:
        for ex in clients.values():
            await ex.close()
    return "problems: " + ("; ".join(problems) or "none")


def run(db_path, binance_url, bybit_url, out_path, stops=False):
    """One process's run (a forkserver child in the crash test): what reconciliation found, then 'done'."""
    found = asyncio.run(main(db_path, binance_url, bybit_url, stops))
    Path(out_path).write_text(f"{found}\ndone\n")


if __name__ == "__main__":
    print(asyncio.run(main(*sys.argv[1:4])))
