"""Compares the exchanges' positions, resting orders and wallet balances with the database and names every difference."""
import ccxt

from vigil import venues
from vigil.schemas import ORDER_WORKING, POSITION_LIVE

TOLERANCE = 1e-9
UNREACHABLE = 3  # reconciliations in a row a venue may fail to answer before trading halts


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
