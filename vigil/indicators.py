"""Computes technical indicators over numpy price arrays (NaN where a window is not yet full)."""
import numpy as np


def sma(x, n):
    out = np.full(len(x), np.nan)
    if len(x) >= n:
        c = np.concatenate(([0.0], np.cumsum(x, dtype=float)))
        out[n - 1:] = (c[n:] - c[:-n]) / n
    return out


def _smooth(x, alpha, seed_n):
    """Recursive smoothing y = y + alpha*(x - y), seeded with the mean of the first seed_n values."""
    if len(x) < seed_n:
        return np.full(len(x), np.nan)
    vals = x.tolist()  # plain floats: this loop is several times faster than indexing an array
    y = sum(vals[:seed_n]) / seed_n
    out = [float("nan")] * (seed_n - 1) + [y]
    for v in vals[seed_n:]:
        y += alpha * (v - y)
        out.append(y)
    return np.array(out)


def ema(x, n):
    return _smooth(np.asarray(x, float), 2.0 / (n + 1), n)


def _wilder(x, n):
    return _smooth(np.asarray(x, float), 1.0 / n, n)


def true_range(high, low, close):
    prev = np.concatenate(([close[0]], close[:-1]))
    return np.maximum(high - low, np.maximum(np.abs(high - prev), np.abs(low - prev)))


def atr(high, low, close, n=14):
    return _wilder(true_range(high, low, close), n)


def adx(high, low, close, n=14):
    """Wilder's average directional index; the first value appears after about 2n bars."""
    up = np.diff(high, prepend=high[0])
    down = -np.diff(low, prepend=low[0])
    plus_dm = np.where((up > down) & (up > 0), up, 0.0)
    minus_dm = np.where((down > up) & (down > 0), down, 0.0)
    tr = _wilder(true_range(high, low, close), n)
    with np.errstate(divide="ignore", invalid="ignore"):
        plus_di = 100 * _wilder(plus_dm, n) / tr
        minus_di = 100 * _wilder(minus_dm, n) / tr
        dx = 100 * np.abs(plus_di - minus_di) / (plus_di + minus_di)
    out = np.full(len(close), np.nan)
    valid = np.where(~np.isnan(dx))[0]
    if len(valid):
        start = valid[0]
        out[start:] = _wilder(np.nan_to_num(dx[start:]), n)
    return out


def bollinger(close, n=20, k=2.0):
    """Returns (mid, upper, lower) with a population standard deviation, as is customary."""
    mid = sma(close, n)
    sq = sma(np.asarray(close, float) ** 2, n)
    sd = np.sqrt(np.maximum(sq - mid ** 2, 0.0))
    return mid, mid + k * sd, mid - k * sd


def rsi(close, n=14):
    d = np.diff(close, prepend=close[0])
    gain = _wilder(np.maximum(d, 0.0)[1:], n)
    loss = _wilder(np.maximum(-d, 0.0)[1:], n)
    with np.errstate(divide="ignore", invalid="ignore"):
        rs = gain / loss
        out = np.where(loss == 0, 100.0, 100 - 100 / (1 + rs))
    return np.concatenate(([np.nan], np.where(np.isnan(gain), np.nan, out)))


def realized_vol(close, n):
    """Standard deviation of one-bar log returns over the last n bars (per bar, not annualized)."""
    r = np.diff(np.log(close))
    m, sq = sma(r, n), sma(r ** 2, n)
    return np.concatenate(([np.nan], np.sqrt(np.maximum(sq - m ** 2, 0.0) * n / max(n - 1, 1))))


def rolling_range(high, low, n):
    """Highest high and lowest low of the n bars ending at each bar."""
    hi = np.full(len(high), np.nan)
    lo = np.full(len(low), np.nan)
    if len(high) >= n:
        wh = np.lib.stride_tricks.sliding_window_view(high, n)
        wl = np.lib.stride_tricks.sliding_window_view(low, n)
        hi[n - 1:] = wh.max(axis=1)
        lo[n - 1:] = wl.min(axis=1)
    return hi, lo
