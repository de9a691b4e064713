"""Fills orders against the latest closed bar with the fill model, for sim, paper and backtest."""
from vigil import fills


class SimBroker:
    """Same interface as the live broker: place(order) -> (order, fills)."""

    alarm = None  # nothing here ever needs trading halted

    def __init__(self, source, params):
        self.source = source
        self.params = params

    async def place(self, order):
        bar = self.source.bar(order["venue"], order["symbol"])
        fill = fills.simulate(order, bar, self.params) if bar else None
        order = dict(order)
        if fill is None:
            order.update(status="rejected", error="no liquidity in the bar" if bar else "no price")
            return order, []
        fill["order_id"] = fill["trade_id"] = order["id"]  # one fill per order: the order id is its trade id
        order.update(filled=fill["qty"], avg_price=fill["price"], fee=fill["fee"], fee_ccy=fill["fee_ccy"],
                     status="filled" if fill["qty"] >= order["qty"] else "partial")
        return order, [fill]

    async def resolve(self, order):
        """A simulated order that never got an answer was never filled: the fill model keeps no state."""
        return dict(order, status="cancelled", error="no answer before restart"), []
