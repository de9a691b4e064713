"""Fills orders against the latest closed bar with a fill model of fees, size-dependent slippage and partial fills."""
from vigil.schemas import ORDER_WORKING


def simulate(order, bar, params):
    """Returns a Fill for what the bar can absorb, or None when nothing fills (IOC: the rest is dropped)."""
    if not bar or bar["volume"] <= 0:
        return None
    qty = min(order["qty"], params["max_participation"] * bar["volume"])
    if qty <= 0:
        return None
    buy = order["side"] == "buy"
    base = bar["close"]
    if order["type"] != "market":
        # A stop or target the bar crossed: it fills there, or at the open when the bar gapped past it
        # (worse for a stop, better for a target), then slips like any market order.
        worse = (order["type"] == "stop") == (not buy)
        base = (min if worse else max)(bar["open"], order["price"])
    # Square-root impact law: slippage grows with the square root of the bar volume share taken.
    slip = params["slippage_bps"] / 1e4 + params["impact"] * (qty / bar["volume"]) ** 0.5
    price = base * (1 + slip if buy else 1 - slip)
    fee = qty * price * params["taker_fee"]
    return {"order_id": order["id"], "venue": order["venue"], "symbol": order["symbol"],
            "side": order["side"], "qty": qty, "price": price, "fee": fee,
            "fee_ccy": "USDT", "fee_usdt": fee, "liquidity": "taker", "ts": int(bar["ts"])}


class SimBroker:
    """Same interface as the live broker: place, resolve and cancel an order -> (order, fills).

    A venue stop rests here as it would at the venue: it fills in the first bar after it was placed whose range
    reaches its price, at that price or at the bar's open when the bar gapped through it. An order a crash kept
    from an answer (still pending) never reached the simulated venue.
    """

    alarm = None  # nothing here ever needs trading halted

    def __init__(self, source, params):
        self.source = source
        self.params = params

    async def place(self, order):
        if order["type"] == "venue_stop":
            return dict(order, status="open"), []
        return self._fill(order, order)

    async def resolve(self, order):
        if order["type"] != "venue_stop" or order["status"] == "pending":
            # a simulated order that never got an answer was never filled: the fill model keeps no state
            return dict(order, status="cancelled", error="no answer before restart"), []
        bar = self.source.bar(order["venue"], order["symbol"])
        if not bar or bar["ts"] < order["created_at"] or not (
                bar["low"] <= order["price"] if order["side"] == "sell" else bar["high"] >= order["price"]):
            return order, []
        return self._fill(order, dict(order, type="stop"))

    async def cancel(self, order):
        """A stop the latest bar reached has fired before the cancel arrives, as it would have at the venue."""
        answer, fills = await self.resolve(order)
        if answer["status"] in ORDER_WORKING:
            answer = dict(answer, status="cancelled")
        return answer, fills

    def _fill(self, order, how):
        bar = self.source.bar(order["venue"], order["symbol"])
        fill = simulate(how, bar, self.params) if bar else None
        order = dict(order)
        if fill is None:
            order.update(status="rejected", error="no liquidity in the bar" if bar else "no price")
            return order, []
        fill["order_id"] = fill["trade_id"] = order["id"]  # one fill per order: the order id is its trade id
        order.update(filled=fill["qty"], avg_price=fill["price"], fee=fill["fee"], fee_ccy=fill["fee_ccy"],
                     status="filled" if fill["qty"] >= order["qty"] else "partial")
        return order, [fill]
