import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from fake_venue import FakeVenues
from live_driver import intents
from vigil.executor import client_order_id
from vigil.storage import Storage

ROOT = Path(__file__).resolve().parent.parent
DRIVER = str(ROOT / "tests" / "live_driver.py")
EXPECTED = {client_order_id(cycle, "funding_arb", t["proposal"]["symbol"], leg, "open")
            for cycle, t in intents() for leg in (0, 1)}


def start(db, fake, venue):
    return subprocess.Popen([sys.executable, DRIVER, str(db), fake.url, venue], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_sigkill_at_any_point_of_execute_never_loses_or_doubles_an_order(tmp_path):
    rng = random.Random(11)
    # 24 kills at the exchange's door (each order, as it arrives and once it is stored) and 28 at random
    # moments of the run: before the write-ahead commit, between it and the request, between legs...
    points = [(venue, "order", i, phase) for venue in ("binance", "bybit") for i in range(6)
              for phase in ("received", "stored")]
    points += [(("binance", "bybit")[k % 2], "time", rng.uniform(0.3, 1.6), None) for k in range(28)]
    killed_runs = 0
    with FakeVenues() as fake:
        for run, (venue, kind, at, phase) in enumerate(points):
            fake.orders.clear()
            fake.order_posts.clear()
            db = tmp_path / f"run{run}.db"
            child = start(db, fake, venue)
            if kind == "order":
                def kill(cid, seen, at=at, phase=phase, child=child):
                    if seen == phase and len(fake.order_posts) - 1 == at:
                        os.kill(child.pid, signal.SIGKILL)
                fake.on_order = kill
                child.wait(timeout=60)
                fake.on_order = None
            else:
                try:
                    child.wait(timeout=at)
                except subprocess.TimeoutExpired:
                    child.send_signal(signal.SIGKILL)
                    child.wait(timeout=60)
            killed_runs += child.returncode == -signal.SIGKILL
            again = start(db, fake, venue)  # the restart: same database, same intentions
            out, err = again.communicate(timeout=60)
            assert again.returncode == 0 and out.strip() == "done", err
            # every intended order is at the exchange exactly once, and the database agrees with it
            assert set(fake.orders) == EXPECTED, (run, venue, kind, at, phase)
            assert not any("duplicated" in line for line in err.splitlines())
            store = Storage(str(db))
            orders = {o["id"]: o for o in store.orders()}
            assert set(orders) == EXPECTED
            for cid, o in orders.items():
                assert o["status"] == "filled" and o["exchange_id"] == str(fake.orders[cid]["orderId"])
                assert abs(o["filled"] - float(fake.orders[cid]["executedQty"])) < 1e-12
                assert sum(f["qty"] for f in store.fills(cid)) == o["filled"]
            assert len(store.positions("open")) == 3
            store.close()
    assert killed_runs >= 45  # the kills really landed mid-run
