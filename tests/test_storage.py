import json
import sqlite3

import pytest

from vigil.storage import MIGRATIONS, Storage


def test_wal_and_schema_version(tmp_path):
    db = Storage(str(tmp_path / "v.db"))
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    db.close()
    Storage(str(tmp_path / "v.db")).close()  # reopening does not migrate twice


def test_newer_schema_is_refused(tmp_path):
    path = str(tmp_path / "v.db")
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version={len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match="newer"):
        Storage(path)


def test_kv_survives_reopen(tmp_path):
    path = str(tmp_path / "v.db")
    db = Storage(path)
    db.put("halt", {"reason": "kill", "ts": 1})
    db.close()
    assert Storage(path).get("halt") == {"reason": "kill", "ts": 1}


def test_tx_is_all_or_nothing(tmp_path):
    db = Storage(str(tmp_path / "v.db"))
    with pytest.raises(ZeroDivisionError):
        with db.tx():
            db.put("a", 1)
            with db.tx():
                db.put("b", 2)
            1 / 0
    assert db.get("a") is None and db.get("b") is None
    with db.tx():
        db.put("a", 1)
    assert db.get("a") == 1


def test_writes_are_visible_to_another_connection_at_once(tmp_path):
    """Each write is committed before the caller goes on: a second reader (a restart) sees it."""
    path = str(tmp_path / "v.db")
    db = Storage(path)
    db.save_order({"id": "o1", "cycle": 1, "position_id": "p", "status": "pending"})
    other = sqlite3.connect(path)
    assert other.execute("SELECT status FROM orders WHERE id='o1'").fetchone() == ("pending",)


def test_position_queries(tmp_path):
    db = Storage(str(tmp_path / "v.db"))
    for i, (status, closed) in enumerate([("open", None), ("closed", 20), ("closed", 10)]):
        db.save_position({"id": f"p{i}", "strategy": "s", "status": status, "closed_at": closed})
    assert [p["id"] for p in db.positions("open")] == ["p0"]
    assert [p["id"] for p in db.closed_positions()] == ["p2", "p1"]
    assert [p["id"] for p in db.closed_positions(limit=1)] == ["p1"]


def test_migration_says_which_stops_the_venue_confirmed(tmp_path):
    path = str(tmp_path / "v.db")
    conn = sqlite3.connect(path)  # a database as version 6 left it: positions name a stop, nothing says if held
    for script in MIGRATIONS[:6]:
        conn.executescript(script)
    conn.execute("PRAGMA user_version=6")
    for oid, status in (("s1", "open"), ("s2", "unknown")):
        conn.execute("INSERT INTO orders VALUES (?, 1, ?, ?, '{}')", (oid, f"p-{oid}", status))
        body = json.dumps({"id": f"p-{oid}", "stop_order": oid})
        conn.execute("INSERT INTO positions VALUES (?, 's', 'open', NULL, ?)", (f"p-{oid}", body))
    conn.commit()
    conn.close()
    held = {p["id"]: p["stop_held"] for p in Storage(path).positions()}
    assert held == {"p-s1": True, "p-s2": False}  # a stop whose answer was lost is not taken as held
