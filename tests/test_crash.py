import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from fake_venue import FakeVenues
from vigil.storage import Storage

ROOT = Path(__file__).resolve().parent.parent
DRIVER = str(ROOT / "tests" / "live_driver.py")
# answers that end filled, late or after a lagging lookup: the kills land while they are still working
LATE = [None, None, "new", "partial_then_fill", (503, "lag"), ("new", "lag"), "timeout"]


def start(db, fakes):
    return subprocess.Popen([sys.executable, DRIVER, str(db), fakes["binance"].url, fakes["bybit"].url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sigkill_at_any_point_never_loses_doubles_or_leaves_books_apart_from_the_exchange(tmp_path):
    rng = random.Random(11)
    # 12 kills at the venues' doors (each order, as it arrives and once it is stored) and 40 at random moments
    # of the run: before the write-ahead commit, between it and the request, between legs, while following...
    points = [("order", i, phase) for i in range(6) for phase in ("received", "stored")]
    points += [("time", rng.uniform(0.3, 2.0), None) for _ in range(40)]
    killed_runs = opened = 0
    with FakeVenues() as binance, FakeVenues() as bybit:
        fakes = {"binance": binance, "bybit": bybit}
        for run, (kind, at, phase) in enumerate(points):
            posts = []
            for fake in fakes.values():
                fake.orders.clear()
                fake.order_posts.clear()
                fake.order_faults = [rng.choice(LATE) for _ in range(3)]
            db = tmp_path / f"run{run}.db"
            child = start(db, fakes)
            if kind == "order":
                def kill(cid, seen, at=at, phase=phase, child=child):
                    if seen == "received":
                        posts.append(cid)
                    if seen == phase and len(posts) - 1 == at:
                        os.kill(child.pid, signal.SIGKILL)
                for fake in fakes.values():
                    fake.on_order = kill
                child.wait(timeout=60)
                for fake in fakes.values():
                    fake.on_order = None
            else:
                try:
                    child.wait(timeout=at)
                except subprocess.TimeoutExpired:
                    child.send_signal(signal.SIGKILL)
                    child.wait(timeout=60)
            child.stdout.close()
            child.stderr.close()
            killed_runs += child.returncode == -signal.SIGKILL
            again = start(db, fakes)  # the restart: same database, same intentions
            out, err = again.communicate(timeout=60)
            where = (run, kind, at, phase, binance.order_faults, bybit.order_faults)
            assert again.returncode == 0 and out.splitlines()[-1] == "done", (where, err[-3000:])
            # reconciliation finds nothing to halt for: the restart explained everything the kill left
            assert out.splitlines()[0] == "problems: none", (where, out)
            placed = {**binance.orders, **bybit.orders}
            for fake in fakes.values():  # no client id reached a venue twice
                assert len(fake.order_posts) == len(set(fake.order_posts)), (where, fake.order_posts)
            assert not any("duplicated" in line for line in err.splitlines())
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
            opened += len(store.positions("open"))
            # the books equal each venue's position
            books = {}
            for p in store.positions("open"):
                for leg in p["legs"]:
                    key = (leg["venue"], leg["symbol"].replace("/", ""))
                    books[key] = books.get(key, 0.0) + leg["qty"] * (1 if leg["side"] == "buy" else -1)
            for venue, fake in fakes.items():
                for symbol, qty in fake.net_positions().items():
                    assert abs(books.get((venue, symbol), 0.0) - qty) < 1e-9, (where, venue, symbol)
            store.close()
    assert killed_runs >= 45  # the kills really landed mid-run
    assert opened >= 100  # and most intentions still ended as whole spreads
