"""Keeps one symbol's closed candles current from a ccxt.pro kline stream, backfilling every gap over REST."""
import asyncio
import logging
import time

import numpy as np

log = logging.getLogger("vigil.candles")


class CandleStream:
    """Closed bars only, no gap and no duplicate: REST fills what the stream missed on start and reconnect."""

    def __init__(self, ex, venue, symbol, market_symbol, bar_ms, history, stale_after):
        self.ex, self.venue, self.symbol, self.market_symbol = ex, venue, symbol, market_symbol
        self.bar_ms, self.history, self.stale_after = bar_ms, history, stale_after
        self.timeframe = {60_000: "1m", 300_000: "5m", 900_000: "15m", 3_600_000: "1h"}[bar_ms]
        self.rows = []  # closed candles, ascending open time
        self.open_bar = None  # the bar the stream is still updating
        self.array = np.empty((0, 6))
        self.heard = None  # monotonic time of the last message or backfill
        self.error = "not started"
        self.reconnects = 0

    def candles(self):
        return self.array

    def health(self):
        """None when fresh, else why not."""
        if self.heard is None:
            return self.error
        quiet = time.monotonic() - self.heard
        if quiet > self.stale_after:
            return f"stale: nothing for {quiet:.0f}s ({self.error or 'no message'})"
        return None

    async def run(self):
        backoff = 1.0
        while True:
            try:
                self.open_bar = None
                await self.backfill()
                while True:
                    for candle in await self.ex.watch_ohlcv(self.market_symbol, self.timeframe):
                        self._update(candle)
                    self.heard, self.error = time.monotonic(), None
                    backoff = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as e:  # every stream error ends in a reconnect and a backfill
                self.error = f"{type(e).__name__}: {str(e)[:200]}"
                self.reconnects += 1
                log.warning("%s %s stream: %s; reconnecting in %.0fs", self.venue, self.symbol, self.error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def backfill(self):
        """Fetches every closed bar after the last one held (or the last `history` bars) over REST."""
        now = int(time.time() * 1000)
        since = self.rows[-1][0] + self.bar_ms if self.rows else now - (self.history + 1) * self.bar_ms
        while since + self.bar_ms <= now:
            page = await self.ex.fetch_ohlcv(self.market_symbol, self.timeframe, since=since, limit=1000)
            if not page:
                break
            self._take(page, newest_open=now // self.bar_ms * self.bar_ms)
            if page[-1][0] < since:
                break
            since = int(page[-1][0]) + self.bar_ms
        self.heard, self.error = time.monotonic(), None

    def _update(self, candle):
        """A bar is closed once a later bar opens: until then it is only remembered as the open one."""
        if self.open_bar is not None and candle[0] > self.open_bar[0]:
            self._take([self.open_bar], newest_open=int(candle[0]))
        if self.open_bar is None or candle[0] >= self.open_bar[0]:
            self.open_bar = list(candle)

    def _take(self, candles, newest_open):
        """Keeps the bars that closed (opened before newest_open) and are newer than the last one held."""
        last = self.rows[-1][0] if self.rows else -1
        added = False
        for c in candles:
            ts = int(c[0])
            if last < ts < newest_open and None not in c[1:6]:
                self.rows.append((ts, *map(float, c[1:6])))
                last, added = ts, True
        if added:
            del self.rows[:-self.history]
            self.array = np.array(self.rows, dtype=float)
