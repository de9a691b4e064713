"""Compares the exchanges' positions, resting orders and wallet balances with the database and names every difference."""
import ccxt

from vigil import venues

TOLERANCE = 1e-9


async def reconcile(clients, db, symbols, balance_tolerance):
    """Returns (problems, notices): a problem halts trading, a notice (something Vigil did not create) is reported."""
    problems, notices, wallets = [], [], {}
    booked = {p["id"] for p in db.positions()}
    for o in db.orders(statuses=("filled", "partial")):
        if o["position_id"] not in booked and not o["position_id"].endswith(":exit"):
            problems.append(f"order {o['id']} filled {o['filled']} {o['symbol']} on {o['venue']} but no position "
                            "was booked for it")
    for o in db.orders(statuses=("pending", "unknown")):
        problems.append(f"order {o['id']} is still {o['status']}: its outcome could not be proven")
    expected = {}
    for p in db.positions():
        if p["status"] == "closed":
            continue
        for leg in p["legs"]:
            if leg["market"] == "swap":
                key = (leg["venue"], leg["symbol"])
                expected[key] = expected.get(key, 0.0) + leg["qty"] * (1 if leg["side"] == "buy" else -1)
    for venue, ex in clients.items():
        markets = [venues.swap_symbol(s) for s in symbols]
        try:
            held = await ex.fetch_positions(markets)
            resting = [o for m in markets for o in await ex.fetch_open_orders(m)]
            wallets[venue] = _wallet_usdt(venue, await ex.fetch_balance())
        except (ccxt.BaseError, LookupError, ValueError) as e:
            problems.append(f"{venue}: positions, orders or balance unavailable ({type(e).__name__})")
            continue
        actual = {}
        for pos in held:
            size = float(pos.get("contracts") or 0) * float(pos.get("contractSize") or 1)
            key = (venue, pos["symbol"].split(":")[0])
            actual[key] = actual.get(key, 0.0) + (size if pos.get("side") == "long" else -size)
        for key in sorted(set(expected) | set(actual)):
            if key[0] != venue:
                continue
            want, have = expected.get(key, 0.0), actual.get(key, 0.0)
            if abs(want - have) <= TOLERANCE * max(1.0, abs(want)):
                continue
            if abs(want) <= TOLERANCE:
                notices.append(f"{venue} {key[1]}: a position of {have:g} that Vigil did not open, left alone")
            else:
                problems.append(f"{venue} {key[1]}: the database holds {want:g}, the exchange {have:g}")
        for o in resting:
            cid = o.get("clientOrderId") or ""
            if cid.startswith("vg"):
                problems.append(f"{venue}: Vigil's order {cid} rests at the exchange; Vigil never leaves orders resting")
            else:
                notices.append(f"{venue}: order {cid or o.get('id')} on {o['symbol']} is not Vigil's, left alone")
    if len(wallets) == len(clients):
        _balances(db, sum(wallets.values()), balance_tolerance, problems, notices)
    return problems, notices


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
