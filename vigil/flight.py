"""Keeps the flight record: each cycle's inputs stored cheaply, rebuilt to replay that cycle's decisions against
what was recorded, and served back in order as the source of a backtest."""
import hashlib
import importlib
import json
import pathlib

import numpy as np

from vigil import schemas
from vigil.decide import decide
from vigil.schemas import TS
from vigil.storage import Storage

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
        fresh, window = [], []
        for venue, by_symbol in (candles["data"] or {}).items():
            for symbol, c in by_symbol.items():
                if len(c):
                    window.append([venue, symbol, int(c[-1, TS]), len(c)])
                last = self.last_ts.get((venue, symbol), -1)
                new = c[c[:, TS] > last] if len(c) else c
                if len(new):
                    fresh.append((venue, symbol, new))
                    self.last_ts[(venue, symbol)] = int(new[-1, TS])
        # rows made one series at a time as they are stored: a first cycle at 300 symbols x 3 venues holds 270,000
        rows = ((venue, symbol, int(r[0]), *r[1:6]) for venue, symbol, new in fresh for r in new.tolist())
        body = {k: v for k, v in inputs.items() if k not in ("candles", "prices")}
        body["prices"] = [[v, s, p] for (v, s), p in inputs["prices"].items()]
        body["candles_meta"] = {k: candles[k] for k in ("ts", "ok", "error")}
        body["window"] = window  # the last candle and window length per venue and symbol
        self.db.add_flight(inputs["n"], inputs["now"], self.hash, self.code, body, rows)


def load(db, n):
    """The inputs of cycle n as the decisions saw them, or None if that cycle was not recorded."""
    row = db.flight(n)
    if row is None:
        return None
    body, config, code = row
    meta = body.pop("candles_meta")
    data = {}
    for venue, symbol, last, length in body.pop("window"):
        rows = db.flight_candles(venue, symbol, last, length)
        data.setdefault(venue, {})[symbol] = np.array(rows, dtype=float).reshape(-1, 6)
    body["candles"] = schemas.feed(data if meta["ok"] else None, meta["ts"], meta["error"])
    body["prices"] = {(v, s): p for v, s, p in body["prices"]}
    return body, {"config_hash": config, "code": code}


def _plain(x):
    return json.loads(json.dumps(x, default=float))


def replay(db, cfg, n):
    """Returns (identical, lines to print)."""
    loaded = load(db, n)
    recorded = db.cycle(n)
    if loaded is None or recorded is None:
        return False, [f"cycle {n} has no flight record (retention, or recorded before the recorder existed)"]
    inputs, stamp = loaded
    lines = [f"cycle {n} at {inputs['now']}: recorded with config {stamp['config_hash']} code {stamp['code']}; "
             f"now config {config_hash(cfg)} code {code_version()}"]
    strategies = {name: importlib.import_module(f"vigil.{name}") for name in cfg["strategies"]["enabled"]}
    rec = {"states": {}, "strategies": {}, "veto": None, "verdicts": []}
    decide(cfg, strategies, inputs, rec)
    rec = _plain(rec)
    identical = True
    for part in ("states", "strategies", "veto", "verdicts"):
        same = rec[part] == recorded[part]
        identical &= same
        lines.append(f"{part}: {'IDENTICAL' if same else 'DIFFERENT'}")
        if part in ("states", "strategies"):
            for key in sorted(set(rec[part]) | set(recorded[part])):
                mark = "=" if rec[part].get(key) == recorded[part].get(key) else "!"
                lines.append(f"  {mark} {key}: recorded {recorded[part].get(key)!r}")
                if mark == "!":
                    lines.append(f"    replayed {rec[part].get(key)!r}")
        elif part == "veto":
            lines.append(f"  recorded {recorded['veto'] and recorded['veto']['reason']!r}; "
                         f"replayed {rec['veto'] and rec['veto']['reason']!r}")
        else:
            for old, new in zip(recorded["verdicts"], rec["verdicts"]):
                mark = "=" if old == new else "!"
                lines.append(f"  {mark} {old['proposal_id']}: {old['reason']}")
                if mark == "!":
                    lines.append(f"    replayed {new['proposal_id']}: {new['reason']}")
            if len(recorded["verdicts"]) != len(rec["verdicts"]):
                lines.append(f"  ! recorded {len(recorded['verdicts'])} verdicts, replayed {len(rec['verdicts'])}")
    lines.append("IDENTICAL" if identical else "DIFFERENT")
    return identical, lines


class RecordedSource:
    """Each tick is the next recorded cycle: its candles, its feeds and its clock, exactly as they were seen."""

    def __init__(self, db_path):
        self.db = Storage(db_path)
        self.cycles = self.db.flight_cycles()
        self.k = -1
        self.inputs = None

    def count(self):
        return len(self.cycles)

    async def start(self):
        pass

    async def close(self):
        self.db.close()

    async def tick(self):
        self.k += 1
        self.inputs, _ = load(self.db, self.cycles[self.k])
        return self.inputs["now"]

    def candles(self):
        return self.inputs["candles"]

    async def feeds(self, now):
        return {name: dict(feed) for name, feed in self.inputs["feeds"].items()}

    def bar(self, venue, symbol):
        c = (self.inputs["candles"]["data"] or {}).get(venue, {}).get(symbol)
        if c is None or not len(c):
            return None
        return schemas.bar(c[-1])
