"""Keeps every cycle (with its equity), proposal, verdict, order, fill, position and alert in one sqlite file."""
import contextlib
import json
import sqlite3

# Each entry upgrades the schema by one version (PRAGMA user_version); never edit a shipped entry.
MIGRATIONS = [
    """
    CREATE TABLE cycles (n INTEGER PRIMARY KEY, started_at INTEGER, equity REAL, body TEXT);
    CREATE TABLE proposals (id TEXT PRIMARY KEY, cycle INTEGER, strategy TEXT, symbol TEXT, body TEXT);
    CREATE TABLE verdicts (proposal_id TEXT PRIMARY KEY, cycle INTEGER, approved INTEGER, body TEXT);
    CREATE TABLE orders (id TEXT PRIMARY KEY, cycle INTEGER, position_id TEXT, status TEXT, body TEXT);
    CREATE INDEX orders_status ON orders (status);
    CREATE TABLE fills (rowid INTEGER PRIMARY KEY, order_id TEXT, ts INTEGER, body TEXT);
    CREATE INDEX fills_order ON fills (order_id);
    CREATE TABLE positions (id TEXT PRIMARY KEY, strategy TEXT, status TEXT, closed_at INTEGER, body TEXT);
    CREATE INDEX positions_status ON positions (status);
    CREATE TABLE equity (ts INTEGER PRIMARY KEY, cycle INTEGER, equity REAL);
    CREATE TABLE alerts (id INTEGER PRIMARY KEY, ts INTEGER, kind TEXT, text TEXT, sent INTEGER DEFAULT 0);
    CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT);
    """,
    """
    CREATE TABLE flight (n INTEGER PRIMARY KEY, now INTEGER, config_hash TEXT, code TEXT, inputs TEXT);
    CREATE TABLE flight_candles (venue TEXT, symbol TEXT, ts INTEGER, open REAL, high REAL, low REAL,
                                 close REAL, volume REAL, PRIMARY KEY (venue, symbol, ts)) WITHOUT ROWID;
    """,
    # Equity is a column of cycles: one write per cycle, not two.
    "DROP TABLE equity",
    # Retention deletes proposals and verdicts by cycle: without these it scanned both tables every sweep.
    """
    CREATE INDEX proposals_cycle ON proposals (cycle);
    CREATE INDEX verdicts_cycle ON verdicts (cycle);
    """,
    # A fill is keyed by the venue's trade id: a trade reported twice is stored once.
    """
    ALTER TABLE fills ADD COLUMN venue TEXT;
    ALTER TABLE fills ADD COLUMN trade_id TEXT;
    UPDATE fills SET venue = json_extract(body, '$.venue'), trade_id = order_id || ':' || rowid;
    CREATE UNIQUE INDEX fills_trade ON fills (venue, trade_id);
    CREATE INDEX orders_position ON orders (position_id);
    """,
    # A position names the stop order the venue holds for it, if any.
    "UPDATE positions SET body = json_set(body, '$.stop_order', NULL) WHERE json_type(body, '$.stop_order') IS NULL",
    # ... and whether the venue has confirmed that stop resting (until it has, Vigil watches the level too).
    """
    UPDATE positions SET body = json_set(body, '$.stop_held', json(CASE WHEN EXISTS (SELECT 1 FROM orders o
        WHERE o.id = json_extract(positions.body, '$.stop_order') AND o.status = 'open') THEN 'true' ELSE 'false' END))
    """,
]


def inspect(path):
    """(schema version, kind) of an existing database file, read without changing it (no migration, no WAL file);
    kind is what the kv key 'kind' says wrote it ('backtest'), None for a session's. ValueError if not sqlite."""
    with open(path, "rb") as f:
        if f.read(16) not in (b"SQLite format 3\0", b""):
            raise ValueError(f"{path} is not a sqlite database")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        has_kv = conn.execute("SELECT 1 FROM sqlite_master WHERE name='kv'").fetchone()
        row = has_kv and conn.execute("SELECT value FROM kv WHERE key='kind'").fetchone()
    finally:
        conn.close()
    return version, json.loads(row[0]) if row else None


class Storage:
    """One connection; writes inside tx() are committed together before the caller goes on."""

    def __init__(self, path, durable=False, scratch=False):
        """durable: every commit survives a power cut (live money); scratch: none need to (a backtest, which its
        files reproduce: speed over durability)."""
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA page_size=16384")  # a new file only: a page holds ~20 cycle rows, not 5
        self.conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL survives a process crash in WAL mode; FULL also survives a power cut (live money).
        self.conn.execute(f"PRAGMA synchronous={'OFF' if scratch else 'FULL' if durable else 'NORMAL'}")
        self.conn.execute("PRAGMA busy_timeout=5000")
        self._depth = 0
        self.writer = self.conn.cursor()  # writes return no rows: one cursor serves them all
        self._migrate()

    def _migrate(self):
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise RuntimeError(f"{self.path}: schema version {version} is newer than this code knows")
        for i in range(version, len(MIGRATIONS)):
            with self.tx():
                self._script(MIGRATIONS[i])
                self.conn.execute(f"PRAGMA user_version={i + 1}")

    def _script(self, script):
        # executescript() would commit the open transaction; run statement by statement instead.
        for statement in script.split(";"):
            if statement.strip():
                self.conn.execute(statement)

    @contextlib.contextmanager
    def tx(self):
        """Groups writes into one transaction; nested calls join the outer one."""
        if self._depth == 0:
            self.conn.execute("BEGIN IMMEDIATE")
        self._depth += 1
        try:
            yield self
        except BaseException:
            self._depth -= 1
            if self._depth == 0:
                self.conn.execute("ROLLBACK")
            raise
        self._depth -= 1
        if self._depth == 0:
            self.conn.execute("COMMIT")

    @contextlib.contextmanager
    def batch(self):
        """One transaction around many cycles' writes (a backtest); the flush() it yields commits them so far."""
        def flush():
            self.conn.execute("COMMIT")
            self.conn.execute("BEGIN IMMEDIATE")
        with self.tx():
            yield flush

    def _write(self, sql, args):
        if self._depth:  # inside a transaction already: no need for a context of its own
            self.writer.execute(sql, args)
            return
        with self.tx():
            self.writer.execute(sql, args)

    def _bodies(self, sql, args=()):
        return [json.loads(row[0]) for row in self.conn.execute(sql, args)]

    # key/value: halt flag, paused strategies, veto, day start equity
    def get(self, key, default=None):
        row = self.conn.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def put(self, key, value):
        self._write("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, json.dumps(value)))

    def add_cycle(self, record):
        self._write("INSERT OR REPLACE INTO cycles VALUES (?, ?, ?, ?)",
                    (record["n"], record["started_at"], record["equity"], dump(record)))

    def add_proposal(self, cycle, proposal):
        self._write("INSERT OR REPLACE INTO proposals VALUES (?, ?, ?, ?, ?)",
                    (proposal["id"], cycle, proposal["strategy"], proposal["symbol"], dump(proposal)))

    def add_verdict(self, cycle, verdict):
        self._write("INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?, ?)",
                    (verdict["proposal_id"], cycle, int(verdict["approved"]), dump(verdict)))

    def save_order(self, order):
        self._write("INSERT OR REPLACE INTO orders VALUES (?, ?, ?, ?, ?)",
                    (order["id"], order["cycle"], order["position_id"], order["status"], dump(order)))

    def add_fill(self, fill):
        """Stores a fill once; False when its (venue, trade id) is already booked."""
        self._write("INSERT OR IGNORE INTO fills (order_id, ts, body, venue, trade_id) VALUES (?, ?, ?, ?, ?)",
                    (fill["order_id"], fill["ts"], dump(fill), fill["venue"], fill["trade_id"]))
        return self.writer.rowcount == 1

    def save_position(self, position):
        self._write("INSERT OR REPLACE INTO positions VALUES (?, ?, ?, ?, ?)",
                    (position["id"], position["strategy"], position["status"],
                     position["closed_at"], dump(position)))


    def add_alert(self, ts, kind, text):
        self._write("INSERT INTO alerts (ts, kind, text) VALUES (?, ?, ?)", (ts, kind, text))

    def order(self, order_id):
        rows = self._bodies("SELECT body FROM orders WHERE id=?", (order_id,))
        return rows[0] if rows else None

    def orders(self, statuses=None, position_id=None):
        sql, args = "SELECT body FROM orders WHERE 1=1", []
        if statuses:
            sql += f" AND status IN ({','.join('?' * len(statuses))})"
            args += list(statuses)
        if position_id:
            sql += " AND position_id=?"
            args.append(position_id)
        return self._bodies(sql + " ORDER BY cycle, id", args)

    def fills(self, order_id=None):
        if order_id:
            return self._bodies("SELECT body FROM fills WHERE order_id=? ORDER BY rowid", (order_id,))
        return self._bodies("SELECT body FROM fills ORDER BY rowid")

    def last_fill(self):
        return self.conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM fills").fetchone()[0]

    def cycles_filled_after(self, fill):
        """The cycles whose orders have fills stored after fill row `fill`."""
        return {c for (c,) in self.conn.execute("SELECT DISTINCT json_extract(o.body, '$.cycle') FROM fills f "
                                                "JOIN orders o ON o.id = f.order_id WHERE f.rowid > ?", (fill,))}

    def position(self, position_id):
        rows = self._bodies("SELECT body FROM positions WHERE id=?", (position_id,))
        return rows[0] if rows else None

    def positions(self, *statuses):
        if statuses:
            return self._bodies(f"SELECT body FROM positions WHERE status IN ({','.join('?' * len(statuses))}) "
                                "ORDER BY rowid", statuses)
        return self._bodies("SELECT body FROM positions ORDER BY rowid")

    def realized_pnl(self, closed_only=False):
        """Realized PnL (after fees and funding) of every position, or of the closed ones."""
        return self.conn.execute("SELECT COALESCE(SUM(json_extract(body, '$.realized_pnl')), 0) FROM positions"
                                 + (" WHERE status='closed'" if closed_only else "")).fetchone()[0]

    def closed_positions(self, limit=None):
        sql = "SELECT body FROM positions WHERE status='closed' ORDER BY closed_at DESC, rowid DESC"
        rows = self._bodies(sql + (f" LIMIT {int(limit)}" if limit else ""))
        return rows[::-1]

    def equity_curve(self):
        """The equity at the end of every cycle kept, oldest first."""
        return [e for (e,) in self.conn.execute("SELECT equity FROM cycles ORDER BY n")]

    def cycle(self, n=None):
        if n is None:
            rows = self._bodies("SELECT body FROM cycles ORDER BY n DESC LIMIT 1")
        else:
            rows = self._bodies("SELECT body FROM cycles WHERE n=?", (n,))
        return rows[0] if rows else None

    def cycles(self):
        """Every CycleRecord kept, oldest first."""
        return self._bodies("SELECT body FROM cycles ORDER BY n")

    def first_cycles(self):
        """The oldest cycle each decision table still holds (None: empty), where retention has cut."""
        return {table: self.conn.execute(f"SELECT MIN({column}) FROM {table}").fetchone()[0]
                for table, column in (("cycles", "n"), ("proposals", "cycle"), ("verdicts", "cycle"),
                                      ("flight", "n"))}

    def last_cycle(self):
        return self.conn.execute("SELECT COALESCE(MAX(n), 0) FROM cycles").fetchone()[0]

    def counts(self):
        tables = ("cycles", "proposals", "verdicts", "orders", "fills", "positions", "alerts", "flight",
                  "flight_candles")
        return {t: self.conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}

    def alerts(self, *kinds):
        """The texts of the alerts kept (of these kinds), oldest first."""
        where = f" WHERE kind IN ({','.join('?' * len(kinds))})" if kinds else ""
        return [t for (t,) in self.conn.execute(f"SELECT text FROM alerts{where} ORDER BY id", kinds)]

    def unsent_alerts(self, after=0, limit=50):
        """Alerts not yet delivered to every chat, after id `after` (one chat's progress), oldest first."""
        return self.conn.execute("SELECT id, ts, kind, text FROM alerts WHERE sent=0 AND id>? ORDER BY id LIMIT ?",
                                 (after, limit)).fetchall()

    def mark_alerts_sent(self, upto):
        """Every chat has the alerts up to id upto."""
        self._write("UPDATE alerts SET sent=1 WHERE sent=0 AND id<=?", (upto,))

    def add_flight(self, n, now, config_hash, code, inputs, candles):
        """One cycle's recorded inputs, and candles (venue, symbol, ts, o, h, l, c, v) not stored before."""
        with self.tx():
            self.conn.executemany("INSERT OR IGNORE INTO flight_candles VALUES (?, ?, ?, ?, ?, ?, ?, ?)", candles)
            self.conn.execute("INSERT OR REPLACE INTO flight VALUES (?, ?, ?, ?, ?)",
                              (n, now, config_hash, code, dump(inputs)))

    def flight(self, n):
        """(inputs, config hash, code version) recorded for cycle n, or None."""
        row = self.conn.execute("SELECT inputs, config_hash, code FROM flight WHERE n=?", (n,)).fetchone()
        return row and (json.loads(row[0]), row[1], row[2])

    def flight_candles(self, venue, symbol, last, length):
        """The length recorded candles of venue and symbol up to open time last, oldest first."""
        rows = self.conn.execute(
            "SELECT ts, open, high, low, close, volume FROM flight_candles WHERE venue=? AND symbol=? "
            "AND ts <= ? ORDER BY ts DESC LIMIT ?", (venue, symbol, last, length)).fetchall()
        return rows[::-1]

    def flight_cycles(self):
        return [n for (n,) in self.conn.execute("SELECT n FROM flight ORDER BY n")]

    def prune(self, before_ts, window_ms, alerts_before):
        """Drops decision rows older than before_ts; orders, fills and positions are kept for ever.

        Recorded candles go back window_ms further, so the oldest cycle kept can still be replayed. Alerts
        carry wall-clock stamps (a sim or backtest runs on its own clock), so alerts_before is wall-clock too.
        """
        # Cycles run in time order: scanning from the oldest stops at the first one kept (no full scan).
        first_kept = self.conn.execute("SELECT n FROM cycles WHERE started_at >= ? ORDER BY n LIMIT 1",
                                       (before_ts,)).fetchone()
        old = first_kept[0] - 1 if first_kept else self.last_cycle()
        with self.tx():
            for table in ("cycles", "proposals", "verdicts"):
                column = "n" if table == "cycles" else "cycle"
                self.conn.execute(f"DELETE FROM {table} WHERE {column} <= ?", (old,))
            self.conn.execute("DELETE FROM flight WHERE n <= ?", (old,))
            self.conn.execute("DELETE FROM flight_candles WHERE ts < ?", (before_ts - window_ms,))
            self.conn.execute("DELETE FROM alerts WHERE ts < ?", (alerts_before,))
        return old

    def backup(self, path):
        """An online, consistent copy (sqlite's backup API) checked with integrity_check."""
        target = sqlite3.connect(path)
        try:
            self.conn.backup(target)
            status = target.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            target.close()
        if status != "ok":
            raise RuntimeError(f"backup {path} failed its integrity check: {status}")

    def close(self):
        self.conn.close()


# One encoder for every row (json.dumps with options builds a new one per call); rows are trees, never cyclic.
dump = json.JSONEncoder(separators=(",", ":"), default=float, check_circular=False).encode
