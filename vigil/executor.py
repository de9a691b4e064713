"""Turns approved trades and exits into orders, writing each order before it is sent and booking each fill once."""
import logging

from vigil import schemas, tracker
from vigil.schemas import ORDER_WORKING

log = logging.getLogger("vigil.executor")


def client_order_id(cycle, strategy, symbol, leg, intent, opened=""):
    """Deterministic id: the same decision always maps to the same exchange order (max 36 chars).

    An exit also names the cycle its position opened in: two positions closed in one cycle get two ids.
    """
    base = symbol.split("/")[0][:6]
    return f"vg{cycle}-{strategy[:6]}-{base}-{leg}{intent[0]}{opened}"[:36]


class Halted(Exception):
    """The kill switch was recorded before an order could be sent."""


class Executor:
    """Sends orders through a broker (simulated or ccxt) and keeps the database ahead of it.

    A position's quantity is the sum of its fills: a fill is booked into its position in the transaction
    that stores it, and a fill already stored (same venue and trade id) is never booked again.
    """

    def __init__(self, db, broker, is_halted, alert=lambda kind, text: None, kill=lambda reason: None):
        self.db = db
        self.broker = broker
        self.is_halted = is_halted
        self.alert = alert
        self.kill = kill
        # Ids of orders not yet final: a cycle with none (a backtest's every cycle) asks the database nothing.
        self.working = {o["id"] for o in db.orders(statuses=ORDER_WORKING)}

    async def open(self, trade, cycle, now):
        """Opens the approved trade; a spread gets both legs or neither. Returns the Position.

        Its status says how far it got: opening (an order still working), open, closing (a spread unwound
        short), closed (unwound) or void (nothing filled).
        """
        position = self.db.position(trade["proposal"]["id"]) or tracker.new_position(trade, now)
        for i, leg in enumerate(trade["legs"]):
            order = self._order(cycle, trade["proposal"], position["id"], i, leg["venue"], leg["symbol"],
                                leg["side"], leg["market"], leg["qty"], leg["price"], "open", False)
            position = await self._send(position, order, now)
        return await self._balance(position, cycle, now)

    async def close(self, position, cycle, now, reason, strategy=None, force=False):
        """Sends a reduce-only order for what is left of every leg; one exit in flight at a time."""
        if tracker.exit_in_flight(position, self.db.orders(position_id=position["id"])):
            return position
        position = dict(position, close_reason=position["close_reason"] or reason)
        opened = position["id"].split(":")[0]
        for i, leg in enumerate(position["legs"]):
            if leg["qty"] <= tracker.DUST * leg["opened_qty"]:
                continue
            side = "sell" if leg["side"] == "buy" else "buy"
            order = self._order(cycle, {"id": f"{position['id']}:exit", "strategy": strategy or position["strategy"]},
                                position["id"], i, leg["venue"], leg["symbol"], side, leg["market"],
                                leg["qty"], leg["mark"], "close", True, opened)
            position = await self._send(position, order, now, force)
        return position

    async def follow(self, cycle, now):
        """Asks the broker about every order not yet final and books the answers; returns the positions touched."""
        touched = {}
        if not self.working:
            return touched
        for order in self.db.orders(statuses=ORDER_WORKING):
            position = touched.get(order["position_id"]) or self.db.position(order["position_id"])
            if position is None:  # written by a version that kept no position ahead: reconciliation names it
                log.error("order %s has no position row: left for reconciliation", order["id"])
                continue
            answer, fills = await self.broker.resolve(order)
            touched[position["id"]] = self._record(position, answer, fills, now)
        for pid, position in touched.items():
            touched[pid] = await self._balance(position, cycle, now)
        return touched

    async def recover(self, cycle, now):
        """After a restart: follows what a crash left working and settles positions whose orders never left."""
        self.working = {o["id"] for o in self.db.orders(statuses=ORDER_WORKING)}
        touched = await self.follow(cycle, now)
        for position in self.db.positions("opening"):
            if position["id"] not in touched:
                with self.db.tx():
                    self.db.save_position(tracker.settle(position, self.db.orders(position_id=position["id"]), now))
        return touched

    async def _balance(self, position, cycle, now):
        """A spread must stay delta-neutral: once no entry is working, legs that filled unequally are unwound."""
        if position["kind"] != "spread" or position["status"] != "open":
            return position
        filled = [leg["opened_qty"] for leg in position["legs"]]
        if min(filled) >= max(filled) * (1 - 1e-9):
            return position
        return await self.close(position, cycle, now, "leg failed" if not min(filled) else "legs unequal")

    def _record(self, position, order, fills, now):
        """The broker's answer, its new fills and the position they change, stored together before anything acts."""
        with self.db.tx():
            self.db.save_order(order)
            for fill in fills:
                if self.db.add_fill(schemas.validate("Fill", fill)):
                    position = tracker.book(position, order, fill)
            position = tracker.settle(position, self.db.orders(position_id=position["id"]), now)
            self.db.save_position(position)
        if order["status"] in ORDER_WORKING:
            self.working.add(order["id"])
        else:
            self.working.discard(order["id"])
        if getattr(self.broker, "alarm", None):  # e.g. the venue keeps refusing our clock: nothing more may go
            reason, self.broker.alarm = self.broker.alarm, None
            self.kill(reason)
        return position

    def _order(self, cycle, proposal, position_id, leg, venue, symbol, side, market, qty, ref_price, intent,
               reduce_only, opened=""):
        return schemas.validate("Order", {
            "id": client_order_id(cycle, proposal["strategy"], symbol, leg, intent, opened),
            "cycle": cycle, "proposal_id": proposal["id"], "position_id": position_id,
            "strategy": proposal["strategy"], "leg": leg, "venue": venue, "symbol": symbol,
            "side": side, "market": market, "type": "market", "qty": qty, "price": None, "ref_price": ref_price,
            "reduce_only": reduce_only, "status": "pending", "filled": 0.0, "avg_price": None, "fee": 0.0,
            "fee_ccy": "USDT", "exchange_id": None, "error": None, "created_at": 0, "missing_since": None,
        })

    async def _send(self, position, order, now, force=False):
        if self.is_halted() and not force:
            raise Halted(f"halted before order {order['id']}")
        existing = self.db.order(order["id"])
        if existing is not None:
            # A restart replays the cycle it died in: the same decision maps to the same order id.
            if existing["status"] in ORDER_WORKING:
                answer, fills = await self.broker.resolve(existing)  # ask what became of it, by its id
                position = self._record(position, answer, fills, now)
                existing = answer
            if existing["status"] != "cancelled" or existing["filled"] > 0:
                return position  # its outcome is known or still being followed: never send it a second time
            log.info("order %s was never executed: sending it now under the same id", order["id"])
        order["created_at"] = now
        with self.db.tx():  # write-ahead: the order and its position exist before the request leaves
            self.db.save_order(order)
            self.db.save_position(position)
        self.working.add(order["id"])
        answer, fills = await self.broker.place(order)
        position = self._record(position, answer, fills, now)
        if answer["status"] in ("rejected", "unknown"):
            log.warning("order %s %s: %s", answer["id"], answer["status"], answer["error"])
            self.alert("order", f"order {answer['id']} {answer['side']} {answer['qty']:g} {answer['symbol']} on "
                                f"{answer['venue']} {answer['status']}: {answer['error']}")
        return position
