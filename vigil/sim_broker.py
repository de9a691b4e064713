"""Fills orders against the latest closed bar with the fill model, for sim, paper and backtest."""
from vigil import fills
from vigil.schemas import ORDER_WORKING


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
        fill = fills.simulate(how, bar, self.params) if bar else None
        order = dict(order)
        if fill is None:
            order.update(status="rejected", error="no liquidity in the bar" if bar else "no price")
            return order, []
        fill["order_id"] = fill["trade_id"] = order["id"]  # one fill per order: the order id is its trade id
        order.update(filled=fill["qty"], avg_price=fill["price"], fee=fill["fee"], fee_ccy=fill["fee_ccy"],
                     status="filled" if fill["qty"] >= order["qty"] else "partial")
        return order, [fill]
