"""Serves a recorded session's cycle inputs back in order, so a live or paper session can be backtested."""
from vigil import recorder, schemas
from vigil.storage import Storage


class RecordedSource:
    """Each tick is the next recorded cycle: its candles, its feeds and its clock, exactly as they were seen."""

    def __init__(self, db_path):
        self.db = Storage(db_path)
        self.cycles = [n for (n,) in self.db.conn.execute("SELECT n FROM flight ORDER BY n")]
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
        self.inputs, _ = recorder.load(self.db, self.cycles[self.k])
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
