"""Executes a fixed set of intended spreads against a fake exchange; the crash test kills and restarts it."""
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vigil import venues  # noqa: E402
from vigil.executor import Executor  # noqa: E402
from vigil.live_broker import LiveBroker  # noqa: E402
from vigil.storage import Storage  # noqa: E402

NOW = 1_700_000_000_000


def intents(venue="binance"):
    """Three spreads, two legs each: six orders with fixed client ids."""
    out = []
    for k, symbol in enumerate(["BTC/USDT", "ETH/USDT", "BTC/USDT"]):
        legs = [{"venue": venue, "symbol": symbol, "side": side, "market": "swap", "qty": 0.5 + k,
                 "price": 100.0, "notional": 100.0 * (0.5 + k)} for side in ("buy", "sell")]
        proposal = {"id": f"{k + 1}:funding_arb:{symbol}:open", "strategy": "funding_arb", "symbol": symbol,
                    "side": "buy", "kind": "spread", "intent": "open", "position_id": None,
                    "legs": [{k2: leg[k2] for k2 in ("venue", "symbol", "side", "market")} for leg in legs],
                    "confidence": 1.0, "entry": 100.0, "stop": None, "target": None, "max_hold_s": 0,
                    "reason": "crash test", "created_at": NOW}
        out.append((k + 1, {"proposal": proposal, "legs": legs, "checks": []}))
    return out


async def main(db_path, url, venue):
    ex = venues.client({f"venue.{venue}": {"rest_url": url, "ws_url": ""}}, venue, 1.0, throttled=False)
    ex.apiKey, ex.secret = "TESTKEY", "SECRETKEY123456"
    db = Storage(db_path, durable=True)
    # a short window: an order the kill left unsent is proven absent within one patient lookup
    executor = Executor(db, LiveBroker({venue: ex}, patience_s=2.0, window_s=0.5), lambda: False)
    try:
        for cycle, trade in intents(venue):
            await executor.open(trade, cycle, NOW)  # the same intentions again: nothing sent twice
    finally:
        await ex.close()
    print("done", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
