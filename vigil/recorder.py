"""Records each cycle's inputs (new candles, feeds, positions, config hash, code version) and rebuilds them for replay."""
import hashlib
import json
import pathlib

import numpy as np

from vigil import schemas, storage

CODE_DIR = pathlib.Path(__file__).resolve().parent


def code_version():
    """A hash of the vigil/*.py sources: a replay on other code says so."""
    h = hashlib.sha1()
    for path in sorted(CODE_DIR.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def config_hash(cfg):
    return hashlib.sha1(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:12]


class Recorder:
    """Stores only the candles that are new since the last cycle, so recording stays cheap."""

    def __init__(self, db, cfg):
        self.db = db
        self.hash = config_hash(cfg)
        self.code = code_version()
        self.last_ts = {}  # (venue, symbol) -> open time of the last candle stored

    def record(self, inputs):
        candles = inputs["candles"]
        rows, window = [], []
        for venue, by_symbol in (candles["data"] or {}).items():
            for symbol, c in by_symbol.items():
                if len(c):
                    window.append([venue, symbol, int(c[-1, 0]), len(c)])
                last = self.last_ts.get((venue, symbol), -1)
                new = c[c[:, 0] > last] if len(c) else c
                if len(new):
                    rows += [(venue, symbol, int(r[0]), *map(float, r[1:6])) for r in new]
                    self.last_ts[(venue, symbol)] = int(new[-1, 0])
        body = {k: v for k, v in inputs.items() if k not in ("candles", "prices")}
        body["prices"] = [[v, s, p] for (v, s), p in inputs["prices"].items()]
        body["candles_meta"] = {k: candles[k] for k in ("ts", "ok", "error")}
        body["window"] = window  # the last candle and window length per venue and symbol
        with self.db.tx():
            self.db.conn.executemany("INSERT OR IGNORE INTO flight_candles VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
            self.db.conn.execute("INSERT OR REPLACE INTO flight VALUES (?, ?, ?, ?, ?)",
                                 (inputs["n"], inputs["now"], self.hash, self.code,
                                  storage.dump(body)))


def load(db, n):
    """The inputs of cycle n as the decisions saw them, or None if that cycle was not recorded."""
    row = db.conn.execute("SELECT inputs, config_hash, code FROM flight WHERE n=?", (n,)).fetchone()
    if row is None:
        return None
    body = json.loads(row[0])
    meta = body.pop("candles_meta")
    data = {}
    for venue, symbol, last, length in body.pop("window"):
        rows = db.conn.execute(
            "SELECT ts, open, high, low, close, volume FROM flight_candles WHERE venue=? AND symbol=? "
            "AND ts <= ? ORDER BY ts DESC LIMIT ?", (venue, symbol, last, length)).fetchall()
        data.setdefault(venue, {})[symbol] = np.array(rows[::-1], dtype=float).reshape(-1, 6)
    body["candles"] = schemas.feed(data if meta["ok"] else None, meta["ts"], meta["error"])
    body["prices"] = {(v, s): p for v, s, p in body["prices"]}
    return body, {"config_hash": row[1], "code": row[2]}
