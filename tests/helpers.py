"""Small builders and waits shared by the tests."""
import asyncio
import time

from vigil import tracker

RISK = {"risk_per_trade": 0.005, "max_position": 0.25, "max_symbol": 0.5, "max_gross": 2.0, "max_net": 1.0,
        "max_open_positions": 6, "daily_loss": 0.03, "min_notional": 10.0}
FILLS = {"taker_fee": 0.0005, "slippage_bps": 1.0, "impact": 0.003, "max_participation": 0.1}


def proposal(*, symbol="BTC/USDT", side="buy", entry=100.0, stop=95.0, target=110.0, strategy="s", cycle=1,
             confidence=0.5, kind="directional", intent="open", position_id=None, legs=None, max_hold_s=0):
    legs = legs or [{"venue": "binance", "symbol": symbol, "side": side, "market": "swap"}]
    return {"id": f"{cycle}:{strategy}:{symbol}:{intent}", "strategy": strategy, "symbol": symbol, "side": side,
            "kind": kind, "intent": intent, "position_id": position_id, "legs": legs, "confidence": confidence,
            "entry": entry, "stop": stop, "target": target, "max_hold_s": max_hold_s, "reason": "test",
            "created_at": 0}


def spread(*, symbol="BTC/USDT", entry=100.0, strategy="funding_arb", cycle=1):
    legs = [{"venue": "binance", "symbol": symbol, "side": "buy", "market": "swap"},
            {"venue": "bybit", "symbol": symbol, "side": "sell", "market": "swap"}]
    return proposal(symbol=symbol, side="buy", entry=entry, stop=None, target=None, strategy=strategy, cycle=cycle,
                    kind="spread", legs=legs)


def fill(order_id, qty, price, fee=0.0, side="buy", venue="binance", symbol="BTC/USDT", ts=0, trade_id=None):
    return {"order_id": order_id, "trade_id": trade_id or order_id, "venue": venue, "symbol": symbol, "side": side, "qty": qty, "price": price,
            "fee": fee, "fee_ccy": "USDT", "fee_usdt": fee, "liquidity": "taker", "ts": ts}


async def until(predicate, timeout=10.0):
    """Yields to the event loop until predicate() holds: a wait on a condition, never on luck."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        await asyncio.sleep(0.01)


def opened(trade, fills_by_leg, now=0):
    """A position booked from each leg's entry fills, as the executor books them."""
    position = tracker.new_position(trade, now)
    for i, fills in enumerate(fills_by_leg):
        for f in fills:
            position = tracker.book(position, {"leg": i, "reduce_only": False}, f)
    return tracker.settle(position, [], now, final=True)
