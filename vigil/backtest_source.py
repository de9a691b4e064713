"""Serves stored candles and funding history bar by bar, as the Source of a backtest, with no look-ahead."""
import bisect

import numpy as np

from vigil import schemas
from vigil.config import TIMEFRAME_MS

ABSENT = schemas.feed(error="no history in this backtest")  # copied: each cycle gets feed dicts of its own


class BacktestSource:
    """Candles for the trade venue from files; funding from history files if given; other feeds absent."""

    def __init__(self, cfg, candles, funding=None):
        self.venue = cfg["market"]["trade_venue"]
        self.history = cfg["market"]["history"]
        self.bar_ms = TIMEFRAME_MS[cfg["market"]["timeframe"]]
        self.data = candles  # {symbol: ndarray (n, 6)}
        self.funding = funding or {}  # {symbol: {venue: [(ts, rate, interval_h)]}}
        # One timeline for all symbols: a symbol that has no bar at a time keeps its last one (gaps stay gaps).
        self.timeline = np.unique(np.concatenate([c[:, 0] for c in candles.values()]))
        self.i = min(self.history, len(self.timeline)) - 1  # the first history bars only warm up
        start = self.timeline[self.i] if len(self.timeline) else -1
        self.end = {s: int(np.searchsorted(c[:, 0], start, side="right")) for s, c in candles.items()}
        self.now = int(start) + self.bar_ms  # close time of the latest bar served

    def count(self):
        return len(self.timeline) - 1 - self.i

    async def start(self):
        pass

    async def close(self):
        pass

    async def tick(self):
        self.i += 1
        t = self.timeline[self.i]
        for s, c in self.data.items():
            e = self.end[s]
            if e < len(c) and c[e, 0] <= t:  # the timeline holds every bar, so a symbol moves one bar at most
                self.end[s] = e + 1
        self.now = int(t) + self.bar_ms
        return self.now

    def candles(self):
        end, history = self.end, self.history
        data = {s: c[max(0, end[s] - history):end[s]] for s, c in self.data.items()}
        return schemas.feed({self.venue: data}, self.now)

    def bar(self, venue, symbol):
        end = self.end.get(symbol) if venue == self.venue else None
        return schemas.bar(self.data[symbol][end - 1]) if end else None

    async def feeds(self, now):
        out = {name: dict(ABSENT) for name in schemas.FEEDS}
        if self.funding:
            out["funding"] = schemas.feed(self._funding(now), now)
        return out

    def _funding(self, now):
        """The last rate published at or before now per symbol and venue: never a later one."""
        out = {}
        for symbol, venues in self.funding.items():
            bar = self.bar(self.venue, symbol)
            for venue, rows in venues.items():
                k = bisect.bisect_right(rows, (now, float("inf"), float("inf"))) - 1
                if k < 0 or bar is None:
                    continue
                ts, rate, hours = rows[k]
                step = int(hours * 3_600_000)
                out.setdefault(symbol, {})[venue] = {"rate": rate, "interval_h": hours,
                                                     "next_ts": ts + step, "mark": float(bar["close"])}
        return out
