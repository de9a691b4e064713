"""Computes the latest value of technical indicators over numpy price windows (NaN if the window is too short)."""
import functools

import numpy as np


def _decay(n, m):
    """w with x @ w = Wilder's smoothing (y += (x - y) / n, seeded with the mean of the first n) at the m-th value.

    The smoothing is linear in x, so a dot product with these weights replaces a Python loop per bar.
    """
    w = (1.0 - 1.0 / n) ** np.arange(m - 1, -1, -1.0) / n
    w[:n] = w[n - 1]
    return w


@functools.lru_cache(maxsize=64)
def _last(n, m):
    return _decay(n, m)


@functools.lru_cache(maxsize=16)
def _series(n, m):
    """W with x @ W = the smoothed values from the n-th to the m-th of x (one _decay vector per column)."""
    w = np.zeros((m, m - n + 1))
    for j in range(m - n + 1):
        w[:n + j, j] = _decay(n, n + j)
    return w


def wilder(x, n):
    """The last Wilder-smoothed value of x (of each row of a 2-D x)."""
    m = np.shape(x)[-1]
    return x @ _last(n, m) if m >= n else np.full(np.shape(x)[:-1], np.nan)


def true_range(c):
    """max(high, previous close) - min(low, previous close) per bar of an OHLCV array: the three-way max, cheaper."""
    tr = c[:, 2] - c[:, 3]
    tr[1:] = np.maximum(c[1:, 2], c[:-1, 4]) - np.minimum(c[1:, 3], c[:-1, 4])
    return tr


def atr(c, n=14):
    return float(wilder(true_range(c), n))


def adx_atr(c, n=14):
    """Wilder's average directional index and the ATR it is built on, over an OHLCV array; ADX needs 2n - 1 bars."""
    m = len(c)
    if m < 2 * n - 1:
        return float("nan"), atr(c, n)
    moves = np.zeros((3, m))  # +DM, -DM, TR per bar
    high, low = c[:, 2], c[:, 3]
    up, down = high[1:] - high[:-1], low[:-1] - low[1:]
    np.multiply(up, up > np.maximum(down, 0.0), out=moves[0, 1:])
    np.multiply(down, down > np.maximum(up, 0.0), out=moves[1, 1:])
    moves[2] = true_range(c)
    plus, minus, tr = moves @ _series(n, m)  # smoothed from bar n-1 on
    total = plus + minus
    dx = np.divide(np.abs(plus - minus), total, out=np.zeros(len(total)), where=total > 0)  # flat: no direction
    return float(100 * wilder(dx, n)), float(tr[-1])


def rsi(close, n=14):
    d = close[1:] - close[:-1]
    gain, loss = wilder(np.maximum(np.stack((d, -d)), 0.0), n)
    if gain != gain:
        return float("nan")
    return 100.0 if loss == 0 else float(100 - 100 / (1 + gain / loss))


def log_returns(close):
    logs = np.log(close)
    return logs[1:] - logs[:-1]


def realized_vol(returns, n):
    """Sample standard deviation of the last n one-bar log returns (per bar, not annualized)."""
    r = returns[-n:]
    r = r - r.sum() / n
    return float(np.sqrt(r @ r / (n - 1)))
