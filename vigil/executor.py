"""Turns approved trades and exits into orders, writing each order before it is sent and booking each fill once."""
import logging
import time

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

    def __init__(self, db, broker, is_halted, alert=lambda kind, text: None, kill=lambda reason: None,
                 venue_stops=False, clock=time.time):
        self.db = db
        self.clock = clock
        self.venue_stops = venue_stops  # each open directional position keeps its stop resting at the venue
        self.broker = broker
        self.is_halted = is_halted
        self.alert = alert
        self.kill = kill
        # The orders not yet final, by id, as stored: following them asks the database nothing (with a stop
        # resting nearly every cycle, two months of 1m backtest took 10.9 s of CPU asking it, 6.2 s without).
        self.working = {o["id"]: o for o in db.orders(statuses=ORDER_WORKING)}
        self.first_sent = None  # wall time the cycle's first order left (the orchestrator resets it)

    async def open(self, trade, cycle, now):
        """Opens the approved trade; a spread gets both legs or neither. Returns the Position.

        Its status says how far it got: opening (an order still working), open, closing (a spread unwound
        short), closed (unwound) or void (nothing filled).
        """
        position = self.db.position(trade["proposal"]["id"]) or tracker.new_position(trade, now)
        if position["status"] != "opening":
            # a replayed cycle whose trade a restart already settled: nothing more is sent but its stop
            return await self.protect(position, cycle, now)
        try:
            for i, leg in enumerate(trade["legs"]):
                order = self._order(cycle=cycle, proposal_id=trade["proposal"]["id"], strategy=position["strategy"],
                                    position_id=position["id"], index=i, leg=leg, side=leg["side"], qty=leg["qty"],
                                    ref_price=leg["price"], intent="open", reduce_only=False)
                position = await self._send(position, order, now)
        except Halted:
            # halted between legs: the legs not sent never will be, and what did fill stays on the books
            if self.db.position(position["id"]):
                self._settle(position, now)
            raise
        return await self.protect(await self._balance(position, cycle, now), cycle, now)

    async def close(self, position, cycle, now, reason, strategy=None, force=False, level=None):
        """Sends a reduce-only order for what is left of every leg; one exit in flight at a time.

        level: the stop or target the last bar crossed; the order is then of that type, at that price.
        """
        opened = position["id"].split(":")[0]
        own = {client_order_id(cycle, strategy or position["strategy"], leg["symbol"], i, "close", opened)
               for i, leg in enumerate(position["legs"])}  # in flight under these ids: this very exit, replayed
        others = [o for o in self.db.orders(position_id=position["id"]) if o["id"] not in own]
        if tracker.exit_in_flight(position, others):
            return position  # another exit is in flight: one at a time
        stop = self._resting_stop(position)
        if stop:  # never racing the venue's stop: it is cancelled (or found filled) first
            position = await self._cancel(position, stop, now, f"exit: {reason}")
            if position["stop_order"] or position["status"] == "closed":
                return position  # the cancel got no answer (asked again next cycle), or the stop closed it
        position = dict(position, close_reason=position["close_reason"] or reason)
        for i, leg in enumerate(position["legs"]):
            if leg["qty"] <= tracker.DUST * leg["opened_qty"]:
                continue
            order = self._order(cycle=cycle, proposal_id=f"{position['id']}:exit",
                                strategy=strategy or position["strategy"], position_id=position["id"], index=i,
                                leg=leg, side=schemas.opposite(leg["side"]), qty=leg["qty"], ref_price=leg["mark"],
                                intent="close", reduce_only=True, opened=opened)
            if level is not None:
                order.update(type=reason, price=level)
            position = await self._send(position, order, now, force)
        return position

    async def follow(self, cycle, now, replaying=False):
        """Asks the broker about every order not yet final and books the answers; returns the positions touched.

        replaying: the cycle's own orders (a crash left them working, the restart replays it) are left to its
        decisions, which reach them by their ids.
        """
        touched = {}
        for order in sorted(self.working.values(), key=lambda o: (o["cycle"], o["id"])):  # the database's order
            if replaying and order["cycle"] == cycle:
                continue
            answer, fills = await self.broker.resolve(order)
            if answer == order and not fills:
                continue  # still working as it was (a stop resting): nothing to store
            position = touched.get(order["position_id"]) or self.db.position(order["position_id"])
            if position is None:  # written by a version that kept no position ahead: reconciliation names it
                log.error("order %s has no position row: left for reconciliation", order["id"])
                continue
            if order["type"] == "venue_stop" and answer["status"] in ("cancelled", "rejected") and not answer["filled"]:
                self.alert("stop", f"stop {order['id']} of {order['position_id']} is gone from {order['venue']} "
                                   f"({answer['error'] or answer['status']}): placed again while the position is open")
            touched[position["id"]] = self._record(position, answer, fills, now)
        for pid, position in touched.items():
            touched[pid] = await self.protect(await self._balance(position, cycle, now), cycle, now)
        return touched

    async def recover(self, cycle, now):
        """After a restart: follows what a crash left working and settles positions whose orders never left."""
        self.working = {o["id"]: o for o in self.db.orders(statuses=ORDER_WORKING)}
        touched = await self.follow(cycle, now)
        for position in self.db.positions("opening"):
            # legs a crash kept from being sent never will be: a spread left uneven is unwound
            position = self._settle(position, now)
            if position["status"] != "opening":
                touched[position["id"]] = await self._balance(position, cycle, now)
        for position in self.db.positions("open"):  # a crash before its stop was placed: placed now
            touched[position["id"]] = await self.protect(position, cycle, now)
        return touched

    async def protect(self, position, cycle, now):
        """Keeps one reduce-only stop resting at the venue for the quantity an open directional position holds,
        and none once it is not open (with venue_stops). Returns the position."""
        leg = position["legs"][0]
        want = (self.venue_stops and position["kind"] == "directional" and position["status"] == "open"
                and position["stop"] is not None)
        stop = self._resting_stop(position)
        if stop and stop["status"] == "pending":  # written ahead, a crash came before its answer: asked by its id
            return await self._send(position, stop, now, force=True)
        if stop:
            if want and abs(stop["qty"] - leg["qty"]) <= 1e-9 * leg["opened_qty"]:
                return position
            position = await self._cancel(position, stop, now, "resized" if want else f"position {position['status']}")
            if position["stop_order"]:
                return position  # the cancel got no answer: asked again next cycle, never two stops at once
            want = want and position["status"] == "open"
        if not want:
            return position
        n = sum(o["type"] == "venue_stop" for o in self.db.orders(position_id=position["id"]))
        order = self._order(cycle=cycle, proposal_id=f"{position['id']}:stop", strategy=position["strategy"],
                            position_id=position["id"], index=0, leg=leg, side=schemas.opposite(leg["side"]),
                            qty=leg["qty"], ref_price=position["stop"], intent="stop", reduce_only=True,
                            opened=f"{position['id'].split(':')[0]}.{n}")
        order.update(type="venue_stop", price=position["stop"])
        # named in the write-ahead: a restart asks for this stop by its id instead of placing another
        position = dict(position, stop_order=order["id"])
        return await self._send(position, order, now, force=True)  # protection is placed even while halted

    def _resting_stop(self, position):
        """The position's stop order if it is still working (a replayed cycle's copy may name one since ended)."""
        stop = self.db.order(position["stop_order"]) if position["stop_order"] else None
        return stop if stop and stop["status"] in ORDER_WORKING else None

    async def _cancel(self, position, order, now, why):
        """Cancels a working order and books what became of it (a stop may have fired first)."""
        answer, fills = await self.broker.cancel(order)
        if answer["status"] == "cancelled":
            answer = dict(answer, error=f"cancelled by Vigil: {why}")
        return self._record(position, answer, fills, now)

    def _settle(self, position, now):
        """Settles a position for which nothing more will be sent, unless an order of it is still working."""
        with self.db.tx():
            position = tracker.settle(position, self.db.orders(position_id=position["id"]), now, final=True)
            self.db.save_position(position)
        return position

    def adopt(self, gap, positions, cycle, now):
        """Makes the books hold what the exchange holds on one venue and symbol, as the operator confirmed.

        Vigil's own positions there are first written down toward the exchange's quantity (an exit booked at
        the mark, recorded as such); what the exchange holds beyond them becomes a position of its own
        ('operator'), managed like any other. Returns the positions changed.
        """
        price, gap_qty = gap["mark"] or 1.0, round(gap["exchange"] - gap["books"], 12)
        tag = f"{gap['venue'][:2]}{now // 1000 % 1_000_000}"  # the venue and the second: a unique client id
        changed = []
        for position in positions:
            for i, leg in enumerate(position["legs"]):
                sign = 1 if leg["side"] == "buy" else -1
                if (leg["venue"], leg["symbol"]) != (gap["venue"], gap["symbol"]) or sign * gap_qty >= 0:
                    continue
                qty = min(leg["qty"], abs(gap_qty))
                if qty <= 0:
                    continue
                order = self._order(cycle=cycle, proposal_id=f"{position['id']}:adopt", strategy="operator",
                                    position_id=position["id"], index=i, leg=leg, side="sell" if sign > 0 else "buy",
                                    qty=qty, ref_price=price, intent="write-down", reduce_only=True, opened=tag)
                rest = sum(other["qty"] for other in position["legs"]) - qty
                reason = "written down to the exchange" if rest <= tracker.DUST else position["close_reason"]
                position = self._adopted(dict(position, close_reason=reason), order, now)
                gap_qty += sign * qty
                changed.append(position)
        if abs(gap_qty) > 1e-12:
            side = "buy" if gap_qty > 0 else "sell"
            leg = {"venue": gap["venue"], "symbol": gap["symbol"], "side": side, "market": "swap",
                   "qty": abs(gap_qty), "price": price, "notional": abs(gap_qty) * price}
            proposal = {"id": f"{cycle}:operator:{gap['symbol']}:{tag}", "strategy": "operator",
                        "symbol": gap["symbol"], "side": side, "kind": "directional", "intent": "open",
                        "position_id": None, "legs": [{k: leg[k] for k in ("venue", "symbol", "side", "market")}],
                        "confidence": 1.0, "entry": price, "stop": None, "target": None, "max_hold_s": 0,
                        "reason": "adopted from the exchange by the operator", "created_at": now}
            position = tracker.new_position({"proposal": proposal, "legs": [leg], "checks": []}, now)
            order = self._order(cycle=cycle, proposal_id=proposal["id"], strategy="operator", position_id=position["id"],
                                index=0, leg=leg, side=side, qty=abs(gap_qty), ref_price=price, intent="adopt",
                                reduce_only=False, opened=tag)
            changed.append(self._adopted(position, order, now))
        return changed

    def _adopted(self, position, order, now):
        """Books an order that never went to the exchange: what the operator confirmed it already holds."""
        order = dict(order, status="filled", filled=order["qty"], avg_price=order["ref_price"], created_at=now,
                     error="booked by the operator to match the exchange; nothing was sent")
        fill = {"order_id": order["id"], "trade_id": f"operator:{order['id']}", "venue": order["venue"],
                "symbol": order["symbol"], "side": order["side"], "qty": order["qty"], "price": order["ref_price"],
                "fee": 0.0, "fee_ccy": "USDT", "fee_usdt": 0.0, "liquidity": "taker", "ts": now}
        return self._record(position, order, [fill], now)

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
            self.working[order["id"]] = order
        else:
            self.working.pop(order["id"], None)
        if getattr(self.broker, "alarm", None):  # e.g. the venue keeps refusing our clock: nothing more may go
            reason, self.broker.alarm = self.broker.alarm, None
            self.kill(reason)
        return position

    @staticmethod
    def _order(*, cycle, proposal_id, strategy, position_id, index, leg, side, qty, ref_price, intent, reduce_only,
               opened=""):
        """A market Order for leg number index (a dict with venue, symbol and market) of the position."""
        return schemas.validate("Order", {
            "id": client_order_id(cycle, strategy, leg["symbol"], index, intent, opened),
            "cycle": cycle, "proposal_id": proposal_id, "position_id": position_id,
            "strategy": strategy, "leg": index, "venue": leg["venue"], "symbol": leg["symbol"],
            "side": side, "market": leg["market"], "type": "market", "qty": qty, "price": None, "ref_price": ref_price,
            "reduce_only": reduce_only, "status": "pending", "filled": 0.0, "avg_price": None, "fee": 0.0,
            "fee_ccy": "USDT", "exchange_id": None, "error": None, "created_at": 0, "missing": None,
        })

    async def _send(self, position, order, now, force=False):
        if self.is_halted() and not force:
            raise Halted(f"halted before order {order['id']}")
        existing = self.db.order(order["id"])
        if existing is not None:
            # A restart replays the cycle it died in: the same decision maps to the same order id, and what that
            # order filled is in the position's row already (the caller's copy may predate it).
            position = self.db.position(position["id"]) or position
            if existing["status"] in ORDER_WORKING:
                answer, fills = await self.broker.resolve(existing)  # ask what became of it, by its id
                position = self._record(position, answer, fills, now)
                existing = answer
            if existing["status"] != "cancelled" or existing["filled"] > 0:
                return position  # its outcome is known or still being followed: never sent a second time
            log.info("order %s was never executed: sending it now under the same id", order["id"])
        order["created_at"] = now
        with self.db.tx():  # write-ahead: the order and its position exist before the request leaves
            self.db.save_order(order)
            self.db.save_position(position)
        self.working[order["id"]] = order
        self.first_sent = self.first_sent or self.clock()  # the cycle's latency figure: its first order out
        answer, fills = await self.broker.place(order)
        position = self._record(position, answer, fills, now)
        if answer["status"] in ("rejected", "unknown"):
            log.warning("order %s %s: %s", answer["id"], answer["status"], answer["error"])
            self.alert("order", f"order {answer['id']} {answer['side']} {answer['qty']:g} {answer['symbol']} on "
                                f"{answer['venue']} {answer['status']}: {answer['error']}")
        return position
