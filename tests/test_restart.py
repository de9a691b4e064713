"""A sim killed with SIGKILL again and again, and restarted each time, trades exactly as the uninterrupted run.

A restart continues from the database: whatever sizing and the strategies read (equity with the positions'
marks, day-start equity, the running ADX/ATR/volatility, the veto) must come back bit for bit, and a cycle the
kill interrupted must be redone from the same inputs. The kills land where the wall clock puts them: as soon
as a chosen cycle's row (between cycles) or its recorded inputs (inside the cycle, before its orders) are seen
in the database, which is polled.
"""
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CYCLES = 1500  # about 30 entries and as many exits, of every strategy that trades
KILLS = 26


def make_cfg(tmp_path, name):
    text = (ROOT / "vigil.cfg").read_text()
    lines = [f"db = {tmp_path / name}.db" if line.startswith("db =") else
             "console = false" if line.startswith("console =") else line for line in text.splitlines()]
    path = tmp_path / f"{name}.cfg"
    path.write_text("\n".join(lines) + "\n")
    return path, tmp_path / f"{name}.db"


def start(cfg, cycles, dying=None):
    """run.py, or with dying (a file of order ids) this module as a script: it kills itself at those orders."""
    script = ["run.py"] if dying is None else [__file__, str(dying)]
    return subprocess.Popen([sys.executable, *script, "--config", str(cfg), "--cycles", str(cycles),
                             "--interval", "0"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def query(db, sql, args=()):
    if not db.exists():
        return []
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql, args).fetchall()
    except sqlite3.OperationalError:  # no tables yet
        return []
    finally:
        conn.close()


def last(db, table="cycles"):
    rows = query(db, f"SELECT MAX({'cycle' if table == 'orders' else 'n'}) FROM {table}")
    return (rows[0][0] if rows else None) or 0


def books(db):
    """Everything a run decided, booked and read, in a form two runs can be compared by."""
    positions = []
    for (body,) in query(db, "SELECT body FROM positions ORDER BY id"):
        p = json.loads(body)
        positions.append({k: p[k] for k in ("id", "status", "fees", "funding", "realized_pnl", "opened_at",
                                            "closed_at", "close_reason", "stop", "target")}
                         | {"legs": [(leg["venue"], leg["side"], leg["opened_qty"], leg["qty"], leg["entry"])
                                     for leg in p["legs"]]})
    fills = sorted((f["order_id"], f["qty"], f["price"], f["fee"])
                   for f in (json.loads(b) for (b,) in query(db, "SELECT body FROM fills")))
    orders = sorted(query(db, "SELECT id, status FROM orders"))
    cycles = {}
    for n, body in query(db, "SELECT n, body FROM cycles"):
        rec = json.loads(body)
        del rec["duration_ms"]
        cycles[n] = rec
    inputs = {}  # what each cycle's decisions read, as the flight recorder kept it
    for n, body in query(db, "SELECT n, inputs FROM flight"):
        i = json.loads(body)
        inputs[n] = {k: i[k] for k in ("equity", "day_start_equity", "trend", "positions", "veto")}
    return {"positions": positions, "fills": fills, "orders": orders, "cycles": cycles, "inputs": inputs}


def first_difference(a, b, path=""):
    """Where two nested structures first differ, down to the leaf: a path and both values."""
    if isinstance(a, dict) and isinstance(b, dict) and set(a) == set(b):
        return next((first_difference(a[k], b[k], f"{path}[{k!r}]") for k in sorted(a, key=str) if a[k] != b[k]),
                    None)
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return next((first_difference(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
    return f"{path}:\n{str(a)[:600]}\n{str(b)[:600]}"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The run every killed one must equal, run once for the module: (its books, its database)."""
    cfg, db = make_cfg(tmp_path_factory.mktemp("once"), "once")
    run = start(cfg, CYCLES)
    assert run.wait(timeout=120) == 0, run.stderr.read().decode()
    run.stderr.close()
    return books(db), db


def test_sigkill_at_many_points_then_restart_changes_nothing(tmp_path, uninterrupted):
    expected, db = uninterrupted
    entries = sorted({c for c, o in query(db, "SELECT cycle, id FROM orders") if o.endswith("o")})
    assert len(entries) >= 20 and sum(p["status"] == "closed" for p in expected["positions"]) >= 20

    # Half of the kills at entries: just before the entry's cycle (once the row before it is written), inside
    # it before its order (once its inputs are recorded) or after (once the order is written ahead: before,
    # while or after it fills). Half anywhere, between cycles or inside one.
    rng = random.Random(4789)
    at_entries = rng.sample([c for c in entries if 30 < c < CYCLES - 30], KILLS // 2)
    points = sorted([(c - 1, "cycles"), (c, "flight"), (c, "orders")][i % 3] for i, c in enumerate(at_entries))
    points += [(rng.randrange(30, CYCLES - 30), rng.choice(("cycles", "flight"))) for _ in range(KILLS // 2)]
    points.sort()

    cfg, db = make_cfg(tmp_path, "killed")
    landed = []  # (rows when killed, the next cycle had recorded its inputs, it had sent orders)
    for target, table in points:
        if target <= last(db, table):
            continue  # an earlier kill landed past it
        proc = start(cfg, CYCLES - last(db))
        while not db.exists() and proc.poll() is None:
            time.sleep(0.001)
        poll = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)  # kept open: a poll takes microseconds
        while proc.poll() is None:
            try:
                if (poll.execute(f"SELECT MAX({'cycle' if table == 'orders' else 'n'}) FROM {table}")
                        .fetchone()[0] or 0) >= target:
                    break
            except sqlite3.OperationalError:  # tables not created yet
                time.sleep(0.001)
        proc.send_signal(signal.SIGKILL)
        poll.close()
        assert proc.wait(timeout=60) == -signal.SIGKILL, proc.stderr.read().decode()
        proc.stderr.close()
        n = last(db)
        landed.append((n, bool(query(db, "SELECT 1 FROM flight WHERE n = ?", (n + 1,))),
                       bool(query(db, "SELECT 1 FROM orders WHERE cycle = ?", (n + 1,)))))
    while last(db) < CYCLES:  # the last restart runs to the end
        proc = start(cfg, CYCLES - last(db))
        assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()
        proc.stderr.close()

    assert len(landed) >= 20, landed  # each kill landed before the run was done
    assert sum(mid for _, mid, _ in landed) >= 4, landed  # and many inside a cycle, after its inputs
    got = books(db)
    assert got == expected, f"after kills at {landed}: {first_difference(expected, got)}"
    assert got["cycles"][CYCLES]["equity"] == expected["cycles"][CYCLES]["equity"]


def test_sigkill_between_write_ahead_and_send_of_entries_and_exits(tmp_path, uninterrupted):
    """The narrowest windows, hit on purpose: the order row is committed, the sim never got the order."""
    expected, db = uninterrupted
    kinds = {"first cycle": [], "entry": [], "second leg": [], "exit at a level": [], "exit at market": []}
    for (body,) in query(db, "SELECT body FROM orders ORDER BY id"):
        o = json.loads(body)
        kind = "first cycle" if o["cycle"] == 1 else \
            ("exit at market" if o["type"] == "market" else "exit at a level") if o["reduce_only"] else \
            "second leg" if o["leg"] else "entry"
        kinds[kind].append(o["id"])
    rng = random.Random(4790)
    chosen = [i for kind, n in (("first cycle", 1), ("entry", 4), ("second leg", 1), ("exit at a level", 4),
                                ("exit at market", 2)) for i in rng.sample(kinds[kind], n)]

    cfg, db = make_cfg(tmp_path, "killed")
    dying = tmp_path / "dying"
    dying.write_text(" ".join(chosen))
    kills = 0
    while last(db) < CYCLES:
        proc = start(cfg, CYCLES - last(db), dying)
        code = proc.wait(timeout=120)
        assert code in (0, -signal.SIGKILL), proc.stderr.read().decode()
        proc.stderr.close()
        kills += code == -signal.SIGKILL
    got = books(db)
    assert got == expected, f"killed before sending {chosen}: {first_difference(expected, got)}"
    assert kills == len(chosen) and not dying.read_text().split()


if __name__ == "__main__":  # run.py that SIGKILLs itself once before each order listed in argv[1] reaches the sim
    sys.path.insert(0, str(ROOT))
    from vigil import cli, sim
    listed, place = Path(sys.argv[1]), sim.SimBroker.place

    async def dying_place(self, order):
        ids = listed.read_text().split()
        if order["id"] in ids:
            listed.write_text(" ".join(i for i in ids if i != order["id"]))  # once: the replay sends it
            os.kill(os.getpid(), signal.SIGKILL)
        return await place(self, order)
    sim.SimBroker.place = dying_place
    sys.exit(cli.main(sys.argv[2:]))
