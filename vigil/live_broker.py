"""Trades on the exchanges through ccxt: orders placed, followed and cancelled by client id with every error
classified, and the venues' positions, resting orders and wallets compared with the books."""
import asyncio
import logging
import time

import ccxt

from vigil import venues
from vigil.schemas import ORDER_WORKING, POSITION_LIVE


log = logging.getLogger("vigil.live")
RETRIES = 3
CLOCK_ERRORS = 3  # timestamp refusals in a row that halt trading
TOLERANCE = 1e-9
UNREACHABLE = 3  # reconciliations in a row a venue may fail to answer before trading halts


class LiveBroker:
    """Same interface as SimBroker: place(order) and resolve(order) return (order, fills).

    A retry is only ever the same client order id after a lookup proved the first try absent, so the
    exchange itself would refuse a double. An order the venue answers as still working is looked up
    again for up to patience_s; what is still working then is carried and followed by later cycles.
    """

    def __init__(self, clients, patience_s=3.0, window_s=30.0, missing_lookups=10):
        self.clients = clients  # venue -> ccxt async client with keys
        self.patience_s = patience_s  # how long one call follows a working or unknown order
        # 'Not found' proves absence only after this long and this many answers in a row: lookups lag placement.
        self.window_s, self.missing_lookups = window_s, missing_lookups
        self.clock_errors = {}  # venue -> consecutive timestamp refusals
        self.alarm = None  # a reason to halt trading, taken by the executor
        self.clock, self.sleep = time.time, asyncio.sleep  # tests run both on virtual time

    async def place(self, order):
        ex = self.clients[order["venue"]]
        symbol = venues.market_symbol(order["venue"], order["symbol"])
        try:
            await ex.load_markets()
            # ccxt truncates to the step: 0.39999999999999997 (0.7 - 0.3) must still be 0.4, not 0.399
            amount = float(ex.amount_to_precision(symbol, order["qty"] * (1 + 1e-12)))
        except ccxt.OperationFailed as e:
            return _rejected(order, f"not sent, markets unavailable: {type(e).__name__}"), []
        except ccxt.ExchangeError as e:  # bad symbol, size below precision, keys refused: nothing was sent
            return _rejected(order, f"not sent: {type(e).__name__}: {e}"[:300]), []
        limits = ex.market(symbol)["limits"]
        minimum = (limits["amount"] or {}).get("min") or 0
        if amount <= 0 or amount < minimum:
            return _rejected(order, f"amount {order['qty']} is below the market minimum {minimum}"), []
        min_cost, seen = (limits.get("cost") or {}).get("min") or 0, order["price"] or order["ref_price"]
        if not order["reduce_only"] and seen and amount * seen < min_cost:  # exits are exempt: never block one
            return _rejected(order, f"notional {amount * seen:.2f} is below the market minimum {min_cost}"), []
        order = dict(order, qty=amount)  # the venue's step: filled means this much filled
        params = {"clientOrderId": order["id"]}
        if order["reduce_only"] and order["market"] == "swap":
            params["reduceOnly"] = True
        if order["type"] == "venue_stop":
            params.update(_stop_params(order["venue"], order["side"], ex.price_to_precision(symbol, order["price"])))
        delay = 0.5
        for attempt in range(RETRIES):
            try:
                # a stop or target the last bar crossed is an exit due now: at market, like every order but a
                # venue stop (a market order the venue sends once its trigger price is reached)
                answer = await ex.create_order(symbol, "market", order["side"], amount, None, params)
            except (ccxt.RateLimitExceeded, ccxt.DDoSProtection) as e:
                # Refused before it was processed: after a pause, the same id again (a duplicate would be refused).
                log.warning("order %s throttled (%s), retry %d", order["id"], type(e).__name__, attempt + 1)
                await self.sleep(delay)
                delay *= 2
                continue
            except ccxt.BaseError as e:
                if _clock_refused(e):  # refused unprocessed: resynchronise the clock, then the same id again
                    if self._clock_error(order["venue"], e):
                        return _rejected(order, f"not sent: clock refused: {e}"[:300]), []
                    await _resync(ex)
                    continue
                if _duplicate(e):  # the id is already at the venue: a lookup tells what became of it
                    return await self.resolve(dict(order, status="unknown", error="duplicate client id"))
                if isinstance(e, ccxt.OperationFailed):
                    # Timeout, 5xx, garbage (ccxt's "may or may not have happened"): only the id can tell.
                    log.warning("order %s outcome unknown (%s): looking it up", order["id"], type(e).__name__)
                    return await self.resolve(dict(order, status="unknown", error=f"{type(e).__name__}: {e}"[:300]))
                if not isinstance(e, ccxt.ExchangeError):
                    raise
                return _rejected(order, f"{type(e).__name__}: {e}"[:300]), []  # the exchange said no: final
            self.clock_errors[order["venue"]] = 0
            if not answer or not answer.get("id"):
                return await self.resolve(dict(order, status="unknown", error="answer without an order id"))
            booked = await self._booked(ex, symbol, order, answer)
            if booked[0]["status"] in ORDER_WORKING:  # NEW, PARTIALLY_FILLED, or acknowledged only
                return await self.resolve(booked[0], booked)
            return booked
        return _rejected(order, "throttled on every try; not sent"), []

    async def close(self):
        for ex in self.clients.values():
            await ex.close()

    async def cancel(self, order):
        """Cancels a working order by its client id, then asks what became of it: it may have filled first."""
        ex = self.clients[order["venue"]]
        symbol = venues.market_symbol(order["venue"], order["symbol"])
        try:
            await ex.load_markets()
            if order["venue"] == "bybit":
                await ex.private_post_v5_order_cancel({"category": "linear", "symbol": ex.market_id(symbol),
                                                       "orderLinkId": order["id"]})
            elif order["type"] == "venue_stop":
                await ex.fapiPrivateDeleteAlgoOrder({"clientAlgoId": order["id"]})
            else:
                await ex.cancel_order(None, symbol, {"origClientOrderId": order["id"]})
        except ccxt.BaseError as e:  # already final, not listed yet, or no answer: the lookup below tells
            log.info("cancel of %s answered %s: looking it up", order["id"], type(e).__name__)
        return await self.resolve(order)

    async def check(self):
        """[(venue, problem or None, details)]: keys work, no withdrawal permission, clock in step, balance."""
        rows = []
        for venue, ex in self.clients.items():
            if not ex.apiKey or not ex.secret:
                rows.append((venue, "no API key or secret in the environment", ""))
                continue
            try:
                balance = await ex.fetch_balance()
                skew_ms = await ex.fetch_time() - ex.milliseconds()
                warnings = []
                if abs(skew_ms) > 1000:
                    warnings.append(f"clock skew {skew_ms} ms")
                may_withdraw, missing = await _permissions(ex, venue)
                if may_withdraw:
                    warnings.append("the key may WITHDRAW: create one without that permission")
                if missing:
                    warnings.append(f"the key lacks the permission to {missing}")
                details = f"USDT free {balance.get('USDT', {}).get('free')}, clock skew {skew_ms} ms"
                rows.append((venue, "; ".join(warnings) or None, details))
            except ccxt.BaseError as e:
                rows.append((venue, f"{type(e).__name__}: {str(e)[:150]}", ""))
        return rows

    async def resolve(self, order, known=None):
        """What became of an order, asked by its client id until it is final or patience_s has passed.

        'Not found' is not proof of absence at first (lookups lag placement): the order stays unknown until
        window_s after the first 'not found' and missing_lookups of them in a row, then counts as never placed
        ('cancelled', nothing filled).
        known is the (order, fills) answer already in hand, kept if every lookup fails.
        """
        ex = self.clients[order["venue"]]
        symbol = venues.market_symbol(order["venue"], order["symbol"])
        best = known or (order, [])
        # a stop resting at the venue is working by design: one answer is all a cycle needs
        patience = 0 if order["type"] == "venue_stop" else self.patience_s
        deadline, delay = self.clock() + patience, 0.1
        while True:
            try:
                await ex.load_markets()
                answer = await _lookup(ex, order, symbol)
            except ccxt.OrderNotFound:
                now_ms = int(self.clock() * 1000)
                since, count = order.get("missing") or (now_ms, 0)
                count += 1
                # An order the venue answered with its own id exists, whatever a lagging lookup says.
                if (not order["exchange_id"] and now_ms - since >= self.window_s * 1000
                        and count >= self.missing_lookups):
                    return dict(order, status="cancelled", missing=[since, count],
                                error=f"not found by {count} lookups over {(now_ms - since) / 1000:.0f} s: "
                                      "never placed"), []
                order = dict(order, status="unknown", missing=[since, count], error="not found yet: looking again")
                best = (order, best[1]) if best[0]["status"] in ("pending", "unknown") else best
            except ccxt.BaseError as e:
                if _clock_refused(e):
                    self._clock_error(order["venue"], e)
                    await _resync(ex)
                elif not isinstance(e, ccxt.OperationFailed):
                    raise
                if best[0]["status"] in ("pending", "unknown"):
                    best = (dict(best[0], status="unknown", error=f"lookup failed: {type(e).__name__}"), best[1])
            else:
                self.clock_errors[order["venue"]] = 0
                best = await self._booked(ex, symbol, dict(order, missing=None), answer)
                if best[0]["status"] not in ORDER_WORKING:
                    return best
                order = best[0]
            if self.clock() + delay > deadline:
                return best  # still working or unknown: the next cycle, reconciliation or a restart asks again
            await self.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _clock_error(self, venue, e):
        """Counts a timestamp refusal; the third in a row raises the alarm. Returns whether it did."""
        n = self.clock_errors[venue] = self.clock_errors.get(venue, 0) + 1
        log.warning("%s refused a request's timestamp (%d in a row): %s", venue, n, str(e)[:150])
        if n >= CLOCK_ERRORS:
            self.alarm = f"{venue} refused {n} requests in a row for their timestamp: check the server's clock"
            return True
        return False

    async def _booked(self, ex, symbol, order, answer):
        filled = float(answer.get("filled") or 0)
        # No status (Bybit acknowledges with ids only): the order is working until a lookup says more.
        status = {"closed": "filled", "canceled": "cancelled", "expired": "cancelled", "rejected": "rejected",
                  "open": "open", None: "open"}.get(answer.get("status"), "unknown")
        if filled > 0 and (status == "cancelled" or (status == "filled" and filled < order["qty"] * (1 - 1e-9))):
            status = "partial"  # market orders are IOC: what did not fill is gone
        fee, fee_ccy, fills = 0.0, "USDT", []
        if filled > 0:
            trades = await self._trades(ex, symbol, answer)
            if sum(float(t["amount"]) for t in trades) < filled * (1 - 1e-9) and status not in ORDER_WORKING:
                status = "open"  # the trade list lags the order: follow it until every fill is listed
            prices = {}  # fee currency -> its USDT price, asked once per order
            for t in trades:
                cost = float((t.get("fee") or {}).get("cost") or 0)
                fee += cost
                fee_ccy = (t.get("fee") or {}).get("currency") or fee_ccy
                price = float(t["price"])
                fills.append({"order_id": order["id"], "trade_id": str(t["id"]), "venue": order["venue"],
                              "symbol": order["symbol"],
                              "side": order["side"], "qty": float(t["amount"]), "price": price,
                              "fee": cost, "fee_ccy": fee_ccy,
                              "fee_usdt": cost * await _usdt_price(ex, symbol, fee_ccy, price, prices),
                              "liquidity": "maker" if t.get("takerOrMaker") == "maker" else "taker",
                              "ts": int(t.get("timestamp") or 0)})
        booked = dict(order, status=status, filled=filled, exchange_id=str(answer.get("id")),
                      avg_price=float(answer["average"]) if answer.get("average") else None, fee=fee,
                      fee_ccy=fee_ccy, error=None if status in ("filled", "partial", "open") else order.get("error"))
        return booked, fills

    async def _trades(self, ex, symbol, answer):
        """The order's trades, each once (a venue may list one twice); [] when the venue cannot say now."""
        try:
            trades = await ex.fetch_my_trades(symbol, params={"orderId": answer["id"]})
        except ccxt.BaseError as e:
            log.warning("trades of order %s unavailable (%s): asked again later", answer["id"], e)
            return []
        return list({str(t["id"]): t for t in trades if str(t.get("order")) == str(answer["id"])}.values())


async def _usdt_price(ex, symbol, ccy, fill_price, known):
    """What one unit of the fee currency is worth in USDT, the books' currency: a BNB fee at BNB's last price."""
    market = ex.market(symbol)
    if ccy in ("USDT", market["quote"]):
        return 1.0
    if ccy == market["base"]:
        return fill_price
    if ccy not in known:
        pair = f"{ccy}/USDT:USDT" if market.get("swap") else f"{ccy}/USDT"
        try:
            known[ccy] = float((await ex.fetch_ticker(pair))["last"])
        except (ccxt.BaseError, TypeError) as e:  # the fill stays booked; its fee is counted as nothing, loudly
            log.error("fee in %s not priced (%s: %s): booked as 0 USDT", ccy, type(e).__name__, str(e)[:150])
            known[ccy] = 0.0
    return known[ccy]


async def _permissions(ex, venue):
    """(may withdraw, what trading permission is missing or None), as the venue's key-info endpoint reports them."""
    if venue == "bybit":
        info = (await ex.private_get_v5_user_query_api()).get("result") or {}
        permissions = info.get("permissions") or {}
        contract = set(permissions.get("ContractTrade") or [])
        missing = None if {"Order", "Position"} <= contract else "trade derivatives (ContractTrade: Order, Position)"
        return "Withdraw" in (permissions.get("Wallet") or []), missing
    info = await ex.sapi_get_account_apirestrictions()
    missing = None if info.get("enableFutures") else "trade futures (Enable Futures)"
    return bool(info.get("enableWithdrawals")), missing


def _clock_refused(e):
    """Binance -1021 or Bybit 10002: the request's timestamp is outside the venue's window, so it was not processed."""
    return isinstance(e, ccxt.InvalidNonce) or '"code":-1021' in str(e).replace(" ", "")


def _duplicate(e):
    """The venue already holds an order under this client id (Binance -4116, its Algo Service -20132, Bybit 110072)."""
    text = str(e).replace(" ", "")
    return (isinstance(e, ccxt.DuplicateOrderId) or '"code":-4116' in text or '"code":-20132' in text
            or '"retCode":110072' in text)


async def _resync(ex):
    try:
        await ex.load_time_difference()
    except ccxt.BaseError as e:
        log.warning("clock resynchronisation failed: %s", type(e).__name__)


def _rejected(order, why):
    return dict(order, status="rejected", error=why)


def _stop_params(venue, side, price):
    """A reduce-only stop-market triggered by the mark price: Binance's algo order, Bybit's conditional order."""
    if venue == "bybit":
        # the exit of a long sells when the price falls to the stop; a short's buys when it rises to it
        return {"triggerPrice": price, "triggerDirection": "descending" if side == "sell" else "ascending",
                "triggerBy": "MarkPrice"}
    return {"stopLossPrice": price, "workingType": "MARK_PRICE"}


async def _binance_stop(ex, symbol, client_id):
    """A Binance stop by client id: the Algo Service's order until it triggers, then the order it started."""
    try:
        algo = await ex.fapiPrivateGetAlgoOrder({"clientAlgoId": client_id})
    except ccxt.BadRequest as e:
        if "-20124" in str(e):  # "invalid algo id": what the Algo Service says of an id it does not hold
            raise ccxt.OrderNotFound(str(e)) from e
        raise
    if algo.get("actualOrderId"):
        return await ex.fetch_order(str(algo["actualOrderId"]), symbol)
    status = {"NEW": "open", "TRIGGERING": "open", "TRIGGERED": "open", "CANCELED": "canceled",
              "REJECTED": "rejected"}.get(algo.get("algoStatus"), "expired")  # EXPIRED, or FINISHED unfilled
    return {"id": str(algo["algoId"]), "status": status, "filled": 0, "average": None}


async def _lookup(ex, order, symbol):
    """The order with this client id, in ccxt's unified form; OrderNotFound when the exchange has none."""
    venue, client_id = order["venue"], order["id"]
    if venue != "bybit" and order["type"] == "venue_stop":
        return await _binance_stop(ex, symbol, client_id)
    if venue != "bybit":
        return await ex.fetch_order(None, symbol, {"clientOrderId": client_id})
    # ccxt's Bybit fetchOrder needs the exchange's id; v5 answers by orderLinkId for recent orders too.
    raw = await ex.private_get_v5_order_realtime({"category": "linear", "orderLinkId": client_id})
    rows = (raw.get("result") or {}).get("list") or []
    if not rows:
        raise ccxt.OrderNotFound(f"bybit has no order {client_id}")
    return ex.parse_order(rows[0], ex.market(symbol))


async def venue_state(venue, ex, symbol):
    """What one venue holds, asked the way its API accepts; `check` runs exactly these calls.

    symbol is one config symbol, asked on its own where the venue only then reveals the account's mode.
    Returns {"positions": {symbol: signed quantity}, "marks": {symbol: mark price}, "resting": [orders],
    "wallet": USDT wallet balance, "hedge": hedge mode on}.
    """
    if venue == "bybit":
        # ccxt's bybit refuses a list of symbols; Bybit answers every linear position by settle coin.
        held = await ex.fetch_positions(None, {"category": "linear", "settleCoin": "USDT"})
        resting = await ex.fetch_open_orders(None, None, None, {"category": "linear", "settleCoin": "USDT"})
        # asked by symbol, Bybit lists a flat position too, with the index that tells the account's mode
        probe = await ex.fetch_positions([venues.swap_symbol(symbol)])
        hedge = any(str((p.get("info") or {}).get("positionIdx") or "0") != "0" for p in held + probe)
    else:
        held = await ex.fetch_positions()
        ex.options["warnOnFetchOpenOrdersWithoutSymbol"] = False  # one request for every symbol is what we want
        resting = await ex.fetch_open_orders()
        # stops wait in Binance's Algo Service, which the order book's listing does not show
        resting += [{"clientOrderId": o["clientAlgoId"], "symbol": o["symbol"], "id": str(o["algoId"])}
                    for o in await ex.fapiPrivateGetOpenAlgoOrders()]
        hedge = str((await ex.fapiPrivateGetPositionSideDual()).get("dualSidePosition")).lower() == "true"
    actual, marks = {}, {}
    for pos in held:
        size = float(pos.get("contracts") or 0) * float(pos.get("contractSize") or 1)
        symbol = pos["symbol"].split(":")[0]
        actual[symbol] = actual.get(symbol, 0.0) + (size if pos.get("side") == "long" else -size)
        marks[symbol] = float(pos.get("markPrice") or pos.get("entryPrice") or 0)
    return {"positions": actual, "marks": marks, "resting": resting,
            "wallet": _wallet_usdt(venue, await ex.fetch_balance()), "hedge": hedge}


async def reconcile(clients, db, symbols, balance_tolerance):
    """Returns (problems, notices, gaps): a problem halts trading, a notice (something Vigil did not create) is
    reported, and each gap ({venue, symbol, books, exchange, mark}) is a position difference the operator can
    settle. Orders still working are being followed by the executor, so a symbol with one is not compared.
    symbols are the configured ones (see venue_state).
    """
    problems, notices, wallets, gaps = [], [], {}, []
    booked = {p["id"] for p in db.positions()}
    for o in db.orders(statuses=("filled", "partial")):
        if o["position_id"] not in booked:
            problems.append(f"order {o['id']} filled {o['filled']} {o['symbol']} on {o['venue']} but no position "
                            "was booked for it")
    working = db.orders(statuses=ORDER_WORKING)
    followed = {(o["venue"], o["symbol"]) for o in working if o["type"] != "venue_stop"}  # a resting stop is no change
    expected = {}
    for p in db.positions(*POSITION_LIVE):
        for leg in p["legs"]:
            if leg["market"] == "swap":
                key = (leg["venue"], leg["symbol"])
                expected[key] = expected.get(key, 0.0) + leg["qty"] * (1 if leg["side"] == "buy" else -1)
    failures = db.get("unreachable") or {}
    for venue, ex in clients.items():
        try:
            state = await venue_state(venue, ex, symbols[0])
        except (ccxt.BaseError, LookupError, ValueError, TypeError) as e:
            failures[venue] = failures.get(venue, 0) + 1
            text = f"{venue}: positions, orders or balance unavailable ({type(e).__name__})"
            (problems if failures[venue] >= UNREACHABLE else notices).append(text)
            continue
        failures[venue] = 0
        actual, wallets[venue] = state["positions"], state["wallet"]
        if state["hedge"]:
            problems.append(f"{venue}: the account is in hedge mode (dual side); Vigil trades one-way mode only")
        for key in sorted(set(expected) | {(venue, s) for s in actual}):
            if key[0] != venue or key in followed:
                continue
            want, have = expected.get(key, 0.0), actual.get(key[1], 0.0)
            if abs(want - have) <= TOLERANCE * max(1.0, abs(want)):
                continue
            if abs(want) <= TOLERANCE:
                notices.append(f"{venue} {key[1]}: a position of {have:g} that Vigil did not open, left alone")
            else:
                problems.append(f"{venue} {key[1]}: the database holds {want:g}, the exchange {have:g}")
                gaps.append({"venue": venue, "symbol": key[1], "books": want, "exchange": have,
                             "mark": state["marks"].get(key[1])})
        mine = {o["id"] for o in working}
        for o in state["resting"]:
            cid = o.get("clientOrderId") or ""
            if cid in mine:
                continue
            if cid.startswith("vg"):
                problems.append(f"{venue}: Vigil's order {cid} rests at the exchange, but the books hold it as final")
            else:
                notices.append(f"{venue}: order {cid or o.get('id')} on {o['symbol']} is not Vigil's, left alone")
    db.put("unreachable", failures)
    if len(wallets) == len(clients):
        _balances(db, sum(wallets.values()), balance_tolerance, problems, notices)
    return problems, notices, gaps


def _balances(db, wallet, tolerance, problems, notices):
    """Wallets (fees, funding and closed PnL land there) must move as Vigil's realized PnL did since last time."""
    booked, last = db.realized_pnl(), db.get("balances")
    db.put("balances", {"wallet": wallet, "booked": booked})  # each difference is named once, then the base moves
    if not last:
        return
    moved, explained = wallet - last["wallet"], booked - last["booked"]
    text = (f"wallet balances moved {moved:+.2f} USDT, Vigil's realized PnL {explained:+.2f}: "
            f"{moved - explained:+.2f} unexplained")
    if moved - explained < -tolerance:
        problems.append(text + " (a withdrawal, a trade outside Vigil, or a fee or funding it did not see)")
    elif moved - explained > tolerance:
        notices.append(text + " (a deposit?)")


def _wallet_usdt(venue, balance):
    """The USDT wallet balance (without unrealized PnL) from the venue's own answer."""
    info = balance["info"]
    if venue == "bybit":
        rows = [(c["coin"], c["walletBalance"]) for c in info["result"]["list"][0]["coin"]]
    else:
        rows = [(a["asset"], a["walletBalance"]) for a in info["assets"]]
    return next(float(v) for c, v in rows if c == "USDT")
