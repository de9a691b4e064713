"""Keeps each symbol's Wilder ADX, ATR and realized volatility running bar by bar (a backtest's, over its files a
slice at a time), and classifies it as trending, ranging or volatile."""
import array
import collections
import math

import numpy as np

from vigil import indicators
from vigil.schemas import CLOSE, HIGH, LOW, TS

RESUM_EVERY = 1000  # bars between exact re-sums of the volatility windows


class Trend:
    """Per symbol of one venue: +DM, -DM and true range smoothed since the first bar seen, the ADX of their DX,
    and the sample deviation of the last vol_short and vol_long one-bar log returns.

    A window that does not continue the bars already counted (a first cycle, a jump) restarts the count from
    that window. Its figures then differ from the continued ones in their last digits (13/14 ** 300 is 2e-10),
    which is enough to move a state across a threshold: a restart load()s what dump() saved and goes on.
    """

    def __init__(self, venue, params):
        self.venue = venue
        self.params = params["adx_period"], params["vol_short"], params["vol_long"]
        self.state = {}

    def dump(self):
        """The running state, JSON-ready and exact: load() goes on from it as if the process never stopped."""
        return {"params": list(self.params), "symbols": {symbol: s.dump() for symbol, s in self.state.items()}}

    def load(self, dumped):
        """Goes on from dump()'s state; one dumped with other periods is ignored (the count restarts from the window)."""
        if dumped and dumped["params"] == list(self.params):
            self.state = {symbol: _Running.load(self.params, values) for symbol, values in dumped["symbols"].items()}

    def update(self, candles_feed):
        """{symbol: Trend} after the candle window's new bars; {} when the candle feed failed."""
        if not candles_feed["ok"]:
            return {}
        out = {}
        for symbol, c in (candles_feed["data"] or {}).get(self.venue, {}).items():
            s, k = self.state.get(symbol), len(c)
            if s is not None and s.bars:
                while k and c[k - 1, TS] > s.ts:
                    k -= 1
            if s is None or not k or c[k - 1, TS] != s.ts:  # the bar counted last is not in this window
                s, k = _Running(*self.params), 0
                self.state[symbol] = s
            for ts, _, high, low, close in c[k:, :5].tolist():
                s.step(ts, high, low, close)
            out[symbol] = s.figures()
        return out


class _Running:
    """One symbol's smoothed sums and its window of returns."""
    __slots__ = ("n", "short", "long", "ts", "prev", "bars", "dx_n", "plus", "minus", "tr", "adx", "returns",
                 "sum_short", "sq_short", "sum_long", "sq_long")
    SCALARS = ("ts", "prev", "bars", "dx_n", "plus", "minus", "tr", "adx", "sum_short", "sq_short", "sum_long",
               "sq_long")

    def __init__(self, n, short, long):
        self.n, self.short, self.long = n, short, long
        self.ts = self.prev = None
        self.bars = self.dx_n = 0
        self.plus = self.minus = self.tr = self.adx = 0.0
        self.returns = collections.deque(maxlen=long + 1)
        self.sum_short = self.sq_short = self.sum_long = self.sq_long = 0.0

    def step(self, ts, high, low, close):
        n = self.n
        if self.prev is None:
            plus = minus = 0.0
            tr = high - low
        else:
            p_high, p_low, p_close = self.prev
            up, down = high - p_high, p_low - low
            plus = up if up > down and up > 0 else 0.0
            minus = down if down > up and down > 0 else 0.0
            tr = max(high, p_close) - min(low, p_close)
            self._add_return(math.log(close / p_close) if close > 0 and p_close > 0 else 0.0)
        self.ts, self.prev = ts, (high, low, close)
        self.bars += 1
        if self.bars <= n:  # the seed: the mean of the first n values
            self.plus += plus / n
            self.minus += minus / n
            self.tr += tr / n
            if self.bars < n:
                return
        else:
            self.plus += (plus - self.plus) / n
            self.minus += (minus - self.minus) / n
            self.tr += (tr - self.tr) / n
        total = self.plus + self.minus
        dx = 100 * abs(self.plus - self.minus) / total if total > 0 else 0.0  # flat: no direction
        self.dx_n += 1
        self.adx += dx / n if self.dx_n <= n else (dx - self.adx) / n

    def _add_return(self, r):
        """Running sum and sum of squares over both windows; re-summed exactly now and then so no drift builds up."""
        returns, short, long = self.returns, self.short, self.long
        returns.append(r)
        if self.bars % RESUM_EVERY == 0:
            tail = list(returns)
            self.sum_short, self.sq_short = _sums(tail[-short:])
            self.sum_long, self.sq_long = _sums(tail[-long:])
            return
        self.sum_short += r
        self.sq_short += r * r
        self.sum_long += r
        self.sq_long += r * r
        if len(returns) > short:
            old = returns[-short - 1]
            self.sum_short -= old
            self.sq_short -= old * old
        if len(returns) > long:
            old = returns[0]
            self.sum_long -= old
            self.sq_long -= old * old

    def dump(self):
        """The scalars, then the returns as the bytes of their doubles: written every cycle, and 70 float reprs
        would cost more than the rest of the checkpoint."""
        return [getattr(self, k) for k in self.SCALARS] + [array.array("d", self.returns).tobytes().hex()]

    @classmethod
    def load(cls, params, values):
        s = cls(*params)
        for k, v in zip(cls.SCALARS, values):
            setattr(s, k, v)
        s.prev = tuple(s.prev) if s.prev else None
        s.returns.extend(array.array("d", bytes.fromhex(values[-1])))
        return s

    def figures(self):
        n = self.n
        return {"adx": self.adx if self.dx_n >= n else None, "atr": self.tr if self.bars >= n else None,
                "vol_short": _deviation(self.sum_short, self.sq_short, self.short, len(self.returns)),
                "vol_long": _deviation(self.sum_long, self.sq_long, self.long, len(self.returns)),
                "bars": self.bars}


class FileTrend:
    """Trend's figures for a backtest, which holds every bar ahead: computed with numpy over its files a slice of
    bars at a time, not bar by bar (tests hold them to Trend's within 1e-9). The count starts, as Trend's does, at
    the first bar of the first window; the backtest serves every later bar in order, so it never restarts."""

    SLICE = 8192  # bars computed at once: a few MB of temporaries

    def __init__(self, venue, params, data):
        self.venue = venue
        self.n, self.short, self.long = params["adx_period"], params["vol_short"], params["vol_long"]
        self.data = data  # {symbol: candles} of the venue, whole
        self.runs = {}  # symbol -> {"start", "lo", "hi", "figures" of bars lo..hi-1, "last": smoothed values at hi-1}

    def update(self, candles_feed):
        """{symbol: Trend} at the candle window's last bar; {} when the candle feed failed."""
        if not candles_feed["ok"]:
            return {}
        out = {}
        for symbol, c in (candles_feed["data"] or {}).get(self.venue, {}).items():
            if not len(c):  # a symbol with no bar yet (listed later than the others): nothing counted
                out[symbol] = _Running(self.n, self.short, self.long).figures()
                continue
            full = self.data[symbol]
            run = self.runs.get(symbol)
            if run is None:
                start = int(np.searchsorted(full[:, TS], c[0, TS]))
                run = self.runs[symbol] = {"start": start, "lo": start, "hi": start, "figures": None, "last": None}
            i = int(np.searchsorted(full[:, TS], c[-1, TS]))
            while i >= run["hi"]:
                self._next(full, run)
            k = i - run["lo"]
            adx, atr, vol_short, vol_long = (None if v != v else v for v in run["figures"][:, k].tolist())
            out[symbol] = {"adx": adx, "atr": atr, "vol_short": vol_short, "vol_long": vol_long,
                           "bars": i - run["start"] + 1}
        return out

    def _next(self, full, run):
        """The next slice's figures, going on from the smoothed values the last one ended with."""
        n, start, lo = self.n, run["start"], run["hi"]
        hi = min(lo + self.SLICE, len(full))
        c = full[max(start, lo - self.long):hi]  # the returns of the volatility windows reach back
        high, low, close = c[:, HIGH], c[:, LOW], c[:, CLOSE]
        up, down = np.zeros(len(c)), np.zeros(len(c))  # the first bar counted: no direction, its range its true range
        up[1:], down[1:] = high[1:] - high[:-1], low[:-1] - low[1:]
        tr = indicators.true_range(c)
        returns = np.zeros(len(c))
        with np.errstate(divide="ignore", invalid="ignore"):
            returns[1:] = np.where((close[1:] > 0) & (close[:-1] > 0), np.log(close[1:] / close[:-1]), 0.0)
        cut = lo - max(start, lo - self.long)  # where this slice's bars begin in c
        plus = np.where((up > down) & (up > 0), up, 0.0)[cut:]
        minus = np.where((down > up) & (down > 0), down, 0.0)[cut:]
        last = run["last"] or (None, None, None, None)
        p, m, atr = (indicators.wilder_series(x, n, before) for x, before in zip((plus, minus, tr[cut:]), last))
        total = p + m
        with np.errstate(divide="ignore", invalid="ignore"):
            dx = np.where(total > 0, 100 * np.abs(p - m) / total, np.where(np.isnan(total), np.nan, 0.0))
        if last[3] is not None:
            adx = indicators.wilder_series(dx, n, last[3])
        else:  # the first slice: DX starts at the n-th bar, ADX at the (2n - 1)-th
            adx = np.full(len(dx), np.nan)
            if len(dx) >= n:
                adx[n - 1:] = indicators.wilder_series(dx[n - 1:], n)
        vols = []
        for w in (self.short, self.long):
            vol = np.full(hi - lo, np.nan)
            if len(returns) > w:
                sums = np.lib.stride_tricks.sliding_window_view(returns[1:], w).sum(axis=1)
                squares = np.lib.stride_tricks.sliding_window_view(returns[1:] ** 2, w).sum(axis=1)
                dev = np.sqrt(np.maximum(0.0, squares - sums * sums / w) / (w - 1))  # windows ending at c's bar w on
                vol[max(0, w - cut):] = dev[max(0, cut - w):]  # none before w returns since the first bar counted
            vols.append(vol)
        run["figures"] = np.stack((adx, atr, *vols))
        run["lo"], run["hi"] = lo, hi
        run["last"] = tuple(None if x[-1] != x[-1] else float(x[-1]) for x in (p, m, atr, adx))


def _sums(values):
    """The exact sum and sum of squares of values."""
    return math.fsum(values), math.fsum(x * x for x in values)


def _deviation(total, squares, width, have):
    if have < width:
        return None
    return math.sqrt(max(0.0, squares - total * total / width) / (width - 1))


def classify(candles, trend, params):
    """candles: ndarray (n, 6) ts, open, high, low, close, volume; trend: its running figures -> SymbolState."""
    need = max(2 * params["adx_period"] + 10, params["vol_long"] + 2, params["vol_short"] + 2)
    have = min(0 if candles is None else len(candles), trend["bars"] if trend else 0)
    if have < need:  # need covers ADX (2n - 1 bars) and both volatility windows
        return {"state": "unknown", "figures": {"bars": have}, "reason": f"only {have} candles, {need} needed"}
    adx, atr_pct = trend["adx"], trend["atr"] / float(candles[-1, CLOSE]) * 100
    vol_ratio = trend["vol_short"] / trend["vol_long"] if trend["vol_long"] > 0 else 1.0
    figures = {"adx": adx, "atr_pct": atr_pct, "vol_ratio": vol_ratio}
    if vol_ratio >= params["vol_ratio_volatile"] or atr_pct >= params["atr_pct_volatile"]:
        state = "volatile"
        reason = (f"short-term volatility {vol_ratio:.2f}x the longer norm (limit "
                  f"{params['vol_ratio_volatile']}) or ATR {atr_pct:.3f}% (limit {params['atr_pct_volatile']}%)")
    elif adx >= params["adx_trending"]:
        state = "trending"
        reason = f"ADX {adx:.1f} at or above {params['adx_trending']} with calm volatility"
    else:
        state = "ranging"
        reason = f"ADX {adx:.1f} below {params['adx_trending']} with calm volatility"
    return {"state": state, "figures": figures, "reason": reason}


def classify_all(candles_feed, trend, symbols, venue, params):
    """Classifies every symbol of the venue; a broken candle feed makes every state unknown."""
    if not candles_feed["ok"]:
        why = f"candles feed: {candles_feed['error']}"
        return {s: {"state": "unknown", "figures": {}, "reason": why} for s in symbols}
    by_symbol = (candles_feed["data"] or {}).get(venue, {})
    return {s: classify(by_symbol.get(s), trend.get(s), params) for s in symbols}
