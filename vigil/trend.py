"""Keeps each symbol's Wilder ADX, ATR and realized volatility running, one closed bar at a time."""
import collections
import math

RESUM_EVERY = 1000  # bars between exact re-sums of the volatility windows

class Trend:
    """Per symbol of one venue: +DM, -DM and true range smoothed since the first bar seen, the ADX of their DX,
    and the sample deviation of the last vol_short and vol_long one-bar log returns.

    A window that does not continue the bars already counted (a first cycle, a restart, a jump) restarts the
    count from that window; with a few hundred bars the seed has decayed to nothing (13/14 ** 300 < 1e-9).
    """

    def __init__(self, venue, params):
        self.venue = venue
        self.n, self.short, self.long = params["adx_period"], params["vol_short"], params["vol_long"]
        self.state = {}

    def update(self, candles_feed):
        """{symbol: Trend} after the candle window's new bars; {} when the candle feed failed."""
        if not candles_feed["ok"]:
            return {}
        out = {}
        for symbol, c in (candles_feed["data"] or {}).get(self.venue, {}).items():
            s, k = self.state.get(symbol), len(c)
            if s is not None and s["bars"]:
                while k and c[k - 1, 0] > s["ts"]:
                    k -= 1
            if s is None or not k or c[k - 1, 0] != s["ts"]:  # the bar counted last is not in this window
                s, k = {"ts": None, "prev": None, "bars": 0, "dx_n": 0, "plus": 0.0, "minus": 0.0, "tr": 0.0,
                        "adx": 0.0, "returns": collections.deque(maxlen=self.long + 1), "sums": [0.0] * 4}, 0
                self.state[symbol] = s
            for row in c[k:, :5].tolist():
                self._step(s, row)
            out[symbol] = {"adx": s["adx"] if s["dx_n"] >= self.n else None,
                           "atr": s["tr"] if s["bars"] >= self.n else None,
                           "vol_short": self._vol(s, 0, self.short), "vol_long": self._vol(s, 2, self.long),
                           "bars": s["bars"]}
        return out

    def _step(self, s, row):
        ts, _, high, low, close = row
        n = self.n
        if s["prev"] is None:
            plus = minus = 0.0
            tr = high - low
        else:
            p_high, p_low, p_close = s["prev"]
            up, down = high - p_high, p_low - low
            plus = up if up > down and up > 0 else 0.0
            minus = down if down > up and down > 0 else 0.0
            tr = max(high, p_close) - min(low, p_close)
            self._add_return(s, math.log(close / p_close) if close > 0 and p_close > 0 else 0.0)
        s["ts"], s["prev"] = ts, (high, low, close)
        s["bars"] += 1
        if s["bars"] <= n:  # the seed: the mean of the first n values
            s["plus"] += plus / n
            s["minus"] += minus / n
            s["tr"] += tr / n
            if s["bars"] < n:
                return
        else:
            s["plus"] += (plus - s["plus"]) / n
            s["minus"] += (minus - s["minus"]) / n
            s["tr"] += (tr - s["tr"]) / n
        total = s["plus"] + s["minus"]
        dx = 100 * abs(s["plus"] - s["minus"]) / total if total > 0 else 0.0  # flat: no direction
        s["dx_n"] += 1
        s["adx"] += dx / n if s["dx_n"] <= n else (dx - s["adx"]) / n

    def _add_return(self, s, r):
        """Running sum and sum of squares over both windows; re-summed exactly now and then so no drift builds up."""
        returns, sums = s["returns"], s["sums"]
        returns.append(r)
        if s["bars"] % RESUM_EVERY == 0:
            for i, width in ((0, self.short), (2, self.long)):
                tail = list(returns)[-width:]
                sums[i], sums[i + 1] = math.fsum(tail), math.fsum(x * x for x in tail)
            return
        for i, width in ((0, self.short), (2, self.long)):
            sums[i] += r
            sums[i + 1] += r * r
            if len(returns) > width:
                old = returns[-width - 1]
                sums[i] -= old
                sums[i + 1] -= old * old

    def _vol(self, s, i, width):
        if len(s["returns"]) < width:
            return None
        total, squares = s["sums"][i], s["sums"][i + 1]
        return math.sqrt(max(0.0, squares - total * total / width) / (width - 1))
