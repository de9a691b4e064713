import concurrent.futures
import multiprocessing
import os
import random
import signal

import live_driver
from fake_venue import FakeVenues
from vigil.schemas import ORDER_WORKING
from vigil.storage import Storage

# answers that end filled, late or after a lagging lookup: the kills land while they are still working
LATE = [None, None, "new", "partial_then_fill", (503, "lag"), ("new", "lag"), "timeout"]


# Children fork from a server that imported ccxt once: each run costs milliseconds to start, not a second.
FORK = multiprocessing.get_context("forkserver")
FORK.set_forkserver_preload(["live_driver"])


def start(db, fakes, out, stops=False):
    child = FORK.Process(target=live_driver.run,
                         args=(str(db), fakes["binance"].url, fakes["bybit"].url, str(out), stops))
    child.start()
    return child


def kill_at(point, db, fakes, out, stops=False, between=lambda: None):
    """Starts the driver and SIGKILLs it at point: the at-th order to reach a venue, as it arrives or once
    stored, or at a moment. between() runs while it is down. Returns whether the kill landed."""
    kind, at, phase = point
    posts = []
    child = start(db, fakes, out, stops)
    if kind == "order":
        def kill(cid, seen):
            if seen == "received":
                posts.append(cid)
            if seen == phase and len(posts) - 1 == at:
                os.kill(child.pid, signal.SIGKILL)
        for fake in fakes.values():
            fake.on_order = kill
        child.join(timeout=60)
        for fake in fakes.values():
            fake.on_order = None
    else:
        child.join(timeout=at)
        if child.exitcode is None:
            os.kill(child.pid, signal.SIGKILL)
            child.join(timeout=60)
    between()
    return child.exitcode == -signal.SIGKILL


def one_run(tmp_path, run, point, faults):
    """One run killed at point, then restarted; checks what the restart left. Returns (killed, spreads open)."""
    kind, at, phase = point
    with FakeVenues(nodelay=True) as binance, FakeVenues(nodelay=True) as bybit:
        fakes = {"binance": binance, "bybit": bybit}
        binance.order_faults, bybit.order_faults = faults
        db, out = tmp_path / f"run{run}.db", tmp_path / f"run{run}.out"
        killed = kill_at(point, db, fakes, out)
        where = (run, kind, at, phase, binance.order_faults, bybit.order_faults)
        lines = restart(db, fakes, out, False, where)
        # reconciliation finds nothing to halt for: the restart explained everything the kill left
        assert lines[0] == "problems: none", (where, lines)
        placed = {**binance.orders, **bybit.orders}
        store = Storage(str(db))
        orders = {o["id"]: o for o in store.orders()}
        assert set(placed) <= set(orders)
        for cid, o in orders.items():  # every order followed to its end, its fills booked once
            assert o["status"] in ("filled", "cancelled"), (where, o)
            if cid in placed:
                assert o["status"] == "filled" and o["exchange_id"] == str(placed[cid]["orderId"]), (where, o)
                assert abs(o["filled"] - float(placed[cid]["executedQty"])) < 1e-12
            assert abs(sum(f["qty"] for f in store.fills(cid)) - o["filled"]) < 1e-12
        # both legs of every spread or neither: opened whole, or unwound (or never sent) by the restart
        for p in store.positions():
            qty = [leg["qty"] for leg in p["legs"]]
            assert p["status"] in ("open", "closed", "void") and qty[0] == qty[1], (where, p)
        opened = len(store.positions("open"))
        books_equal_venues(store.positions("open"), fakes, where)
        store.close()
        return killed, opened


def restart(db, fakes, out, stops, where):
    """The restart after a kill (same database, same intentions): checks it ended and no client id reached a
    venue twice. Returns the lines it printed."""
    again = start(db, fakes, out, stops)
    again.join(timeout=60)
    lines = out.read_text().splitlines() if out.exists() else []
    assert again.exitcode == 0 and lines[-1:] == ["done"], (where, lines)
    for fake in fakes.values():
        assert len(fake.order_posts) == len(set(fake.order_posts)), (where, fake.order_posts)
    return lines


def books_equal_venues(positions, fakes, where):
    """The legs of the positions, signed and summed per venue and symbol, equal each venue's net position."""
    books = {}
    for p in positions:
        for leg in p["legs"]:
            key = (leg["venue"], leg["symbol"].replace("/", ""))
            books[key] = books.get(key, 0.0) + leg["qty"] * (1 if leg["side"] == "buy" else -1)
    for venue, fake in fakes.items():
        for symbol, qty in fake.net_positions().items():
            assert abs(books.get((venue, symbol), 0.0) - qty) < 1e-9, (where, venue, symbol)


def test_sigkill_at_any_point_never_loses_doubles_or_leaves_books_apart_from_the_exchange(tmp_path):
    rng = random.Random(11)
    # 12 kills at the venues' doors (each order, as it arrives and once it is stored) and 40 at random moments
    # of the run: before the write-ahead commit, between it and the request, between legs, while following...
    points = [("order", i, phase) for i in range(6) for phase in ("received", "stored")]
    points += [("time", rng.uniform(0.01, 0.5), None) for _ in range(40)]
    faults = [([rng.choice(LATE) for _ in range(3)], [rng.choice(LATE) for _ in range(3)]) for _ in points]
    # four runs at a time, each against its own pair of venues: the runs mostly wait on loopback answers
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one_run, [tmp_path] * len(points), range(len(points)), points, faults))
    assert sum(killed for killed, _ in results) >= 45  # the kills really landed mid-run
    assert sum(opened for _, opened in results) >= 100  # and most intentions still ended as whole spreads


def stop_run(tmp_path, run, point, faults, down=None):
    """A run of directional trades with venue stops killed at point, then restarted (down() runs between).
    Checks that every open position has exactly its stop at its venue and the books equal the venues."""
    with FakeVenues(nodelay=True) as binance, FakeVenues(nodelay=True) as bybit:
        fakes = {"binance": binance, "bybit": bybit}
        binance.order_faults, bybit.order_faults = faults
        db, out = tmp_path / f"stop{run}.db", tmp_path / f"stop{run}.out"
        killed = kill_at(point, db, fakes, out, True, lambda: down and down(fakes))
        where = (run, point, faults)
        lines = restart(db, fakes, out, True, where)
        assert lines == ["problems: none", "done"], (where, lines)
        store = Storage(str(db))
        positions = store.positions()
        stops = {}
        for p in positions:
            leg = p["legs"][0]
            if p["status"] == "open":
                stops[(leg["venue"], p["stop_order"])] = ("SELL" if leg["side"] == "buy" else "BUY", leg["qty"], p["stop"])
            else:
                assert p["status"] in ("closed", "void") and p["stop_order"] is None, (where, p)
        resting = {(venue, cid): stop for venue, fake in fakes.items() for cid, stop in fake.resting_stops().items()}
        assert resting == stops, where  # exactly one stop per open position, of its size; no stray one
        books_equal_venues(positions, fakes, where)
        working = [o["id"] for o in store.orders(statuses=ORDER_WORKING)]
        assert sorted(working) == sorted(cid for _, cid in stops), where
        store.close()
        return killed, positions


def test_sigkill_around_entries_and_their_stops_leaves_each_open_position_its_one_stop(tmp_path):
    rng = random.Random(14)
    # four trades, each an entry and its stop: a kill as each of the 8 orders arrives and once it is stored,
    # and at 8 random moments; entries answer late at random
    points = [("order", i, phase) for i in range(8) for phase in ("received", "stored")]
    points += [("time", rng.uniform(0.01, 0.4), None) for _ in range(8)]
    faults = [([rng.choice(LATE[:4]) for _ in range(2)], [rng.choice(LATE[:4]) for _ in range(2)]) for _ in points]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(stop_run, [tmp_path] * len(points), range(len(points)), points, faults))
    assert sum(killed for killed, _ in results) >= 20
    assert sum(p["status"] == "open" for _, positions in results for p in positions) >= 80


def test_a_position_stays_protected_while_vigil_is_down(tmp_path):
    """Killed right after the first stop is at the venue; the price falls through it during the outage; the
    restart books the stop's fill and closes the position by it."""
    def crash(fakes):
        fakes["binance"].move_price(85.0)
    _, positions = stop_run(tmp_path, 0, ("order", 1, "stored"), ([], []), crash)
    first = positions[0]
    assert first["status"] == "closed" and first["close_reason"] == "stop" and first["legs"][0]["mark"] == 85.0
