"""Turns approved trades and exits into orders, writing each order before it is sent and every fill after."""
import logging

from vigil import schemas, tracker

log = logging.getLogger("vigil.executor")


def client_order_id(cycle, strategy, symbol, leg, intent):
    """Deterministic id: the same decision always maps to the same exchange order (max 36 chars)."""
    base = symbol.split("/")[0][:6]
    return f"vg{cycle}-{strategy[:6]}-{base}-{leg}{intent[0]}"[:36]


class Halted(Exception):
    """The kill switch was recorded before an order could be sent."""


class Executor:
    """Sends orders through a broker (simulated or ccxt) and keeps the database ahead of it."""

    def __init__(self, db, broker, is_halted, alert=lambda kind, text: None):
        self.db = db
        self.broker = broker
        self.is_halted = is_halted
        self.alert = alert

    async def open(self, trade, cycle, now):
        """Opens the approved trade; a spread gets both legs or neither. Returns the Position or None."""
        proposal = trade["proposal"]
        pid = proposal["id"]
        fills_by_leg = []
        try:
            for i, leg in enumerate(trade["legs"]):
                order = self._order(cycle, proposal, pid, i, leg["venue"], leg["symbol"], leg["side"],
                                    leg["market"], leg["qty"], leg["price"], "open", False)
                fills_by_leg.append(await self._send(order, now))
        except Halted:
            # Halted between legs: what did fill is still a position and must stay on the books.
            if any(fills_by_leg):
                kept = [i for i, fills in enumerate(fills_by_leg) if fills]
                partial = dict(trade, legs=[trade["legs"][i] for i in kept])
                self.db.save_position(tracker.open_position(partial, [fills_by_leg[i] for i in kept], now, pid))
            raise
        filled = [sum(f["qty"] for f in fills) for fills in fills_by_leg]
        if not any(filled):
            return None
        position = tracker.open_position(trade, fills_by_leg, now, pid)
        if proposal["kind"] == "spread" and min(filled) < max(filled) * (1 - 1e-9):
            # A spread must stay delta-neutral: if a leg failed or filled short, it is closed at once.
            self.db.save_position(position)
            reason = "leg failed" if not min(filled) else "legs unequal"
            return await self.close(position, cycle, now, reason)
        self.db.save_position(position)
        return position

    async def close(self, position, cycle, now, reason, strategy=None, force=False):
        """Sends reduce-only orders for every leg; a partly filled exit leaves the rest open."""
        fills_by_leg = []
        for i, leg in enumerate(position["legs"]):
            side = "sell" if leg["side"] == "buy" else "buy"
            order = self._order(cycle, {"id": f"{position['id']}:exit", "strategy": strategy or position["strategy"]},
                                position["id"], i, leg["venue"], leg["symbol"], side, leg["market"],
                                leg["qty"], leg["mark"], "close", True)
            fills_by_leg.append(await self._send(order, now, force))
        if not any(fills_by_leg):
            return position
        position = tracker.close_position(position, fills_by_leg, now, reason)
        self.db.save_position(position)
        return position

    async def recover(self):
        """Asks the broker what became of every order a crash left pending or unknown, by its id."""
        for order in self.db.orders(statuses=("pending", "unknown")):
            await self._resolve(order)

    async def _resolve(self, order):
        order, fills = await self.broker.resolve(order)
        self._record(order, fills)
        return order

    def _record(self, order, fills):
        """The broker's answer and its fills, stored together before anything acts on them."""
        with self.db.tx():
            self.db.save_order(order)
            for fill in fills:
                self.db.add_fill(schemas.validate("Fill", fill))

    def _order(self, cycle, proposal, position_id, leg, venue, symbol, side, market, qty, ref_price, intent,
               reduce_only):
        return schemas.validate("Order", {
            "id": client_order_id(cycle, proposal["strategy"], symbol, leg, intent),
            "cycle": cycle, "proposal_id": proposal["id"], "position_id": position_id,
            "strategy": proposal["strategy"], "leg": leg, "venue": venue, "symbol": symbol,
            "side": side, "market": market, "type": "market", "qty": qty, "price": None, "ref_price": ref_price,
            "reduce_only": reduce_only, "status": "pending", "filled": 0.0, "avg_price": None, "fee": 0.0, "fee_ccy": "USDT",
            "exchange_id": None, "error": None, "created_at": 0,
        })

    async def _send(self, order, now, force=False):
        if self.is_halted() and not force:
            raise Halted(f"halted before order {order['id']}")
        existing = self.db.order(order["id"])
        if existing is not None:
            # A restart replays the cycle it died in: the same decision maps to the same order id.
            if existing["status"] not in ("pending", "unknown"):
                return self.db.fills(order["id"])  # its outcome is known: never send it a second time
            existing = await self._resolve(existing)  # ask what became of it, by its id
            if existing["status"] != "cancelled" or existing["filled"] > 0:
                return self.db.fills(order["id"])
            log.info("order %s was never executed: sending it now under the same id", order["id"])
        order["created_at"] = now
        self.db.save_order(order)  # write-ahead: the row exists before the request leaves
        order, fills = await self.broker.place(order)
        self._record(order, fills)
        if order["status"] in ("rejected", "unknown"):
            log.warning("order %s %s: %s", order["id"], order["status"], order["error"])
            self.alert("order", f"order {order['id']} {order['side']} {order['qty']:g} {order['symbol']} on "
                                f"{order['venue']} {order['status']}: {order['error']}")
        return fills
