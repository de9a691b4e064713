"""Computes technical indicators over numpy price arrays (NaN where a window is not yet full)."""
import functools

import numpy as np

CHUNK = 256  # decay^-CHUNK stays far inside float range for every period >= 2
SHORT = 128  # series up to this length smooth by one cached matrix product


@functools.lru_cache(maxsize=64)
def _powers(alpha):
    return (1.0 - alpha) ** np.arange(1, CHUNK + 1)


@functools.lru_cache(maxsize=64)
def _weights(alpha, seed_n, m):
    """W with y = x @ W: column t holds the weight of every x_k in y_t (NaN before the seed is full)."""
    t, k = np.arange(m)[None, :], np.arange(m)[:, None]
    w = np.where(k <= t, alpha * (1.0 - alpha) ** np.maximum(t - k, 0), 0.0)
    w[:seed_n] = (1.0 - alpha) ** (t - seed_n + 1.0) / seed_n
    w[:, :seed_n - 1] = np.nan
    return w


def _smooth(x, alpha, seed_n):
    """Recursive smoothing y = y + alpha*(x - y) along the last axis, seeded with the mean of the first seed_n.

    It runs every cycle for every symbol, so no Python loop per bar: a short series (the classifier's
    window) is one matrix product with cached weights; a longer one is y_j = d^j * (y_0 + alpha * sum_i
    x_i * d^-i) with d = 1 - alpha, restarted every CHUNK values so that d^-i never overflows. Several
    series smooth in one call (rows of a 2-D x).
    """
    x = np.asarray(x, float)
    m = x.shape[-1]
    if m < seed_n:
        return np.full(x.shape, np.nan)
    if m <= SHORT:
        return x @ _weights(alpha, seed_n, m)
    out = np.full(x.shape, np.nan)
    y = out[..., seed_n - 1] = x[..., :seed_n].sum(axis=-1) / seed_n
    for lo in range(seed_n, m, CHUNK):
        part = x[..., lo:lo + CHUNK]
        p = _powers(alpha)[:part.shape[-1]]
        out[..., lo:lo + len(p)] = p * (y[..., None] + alpha * np.cumsum(part / p, axis=-1))
        y = out[..., lo + len(p) - 1]
    return out


def _wilder(x, n):
    return _smooth(x, 1.0 / n, n)


def true_range(high, low, close):
    tr = high - low
    prev = close[:-1]
    tr[1:] = np.maximum(tr[1:], np.maximum(np.abs(high[1:] - prev), np.abs(low[1:] - prev)))
    return tr


def atr(high, low, close, n=14):
    return _wilder(true_range(high, low, close), n)


def adx_atr(high, low, close, n=14):
    """Wilder's average directional index and the ATR it is built on; ADX appears after about 2n bars."""
    moves = np.zeros((3, len(close)))  # +DM, -DM, TR; slicing, not np.diff: this runs for every symbol every cycle
    up, down = high[1:] - high[:-1], low[:-1] - low[1:]
    moves[0, 1:] = np.where((up > down) & (up > 0), up, 0.0)
    moves[1, 1:] = np.where((down > up) & (down > 0), down, 0.0)
    moves[2] = true_range(high, low, close)
    plus, minus, tr = _wilder(moves, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        dx = 100 * np.abs(plus - minus) / (plus + minus)
    out = np.full(len(close), np.nan)
    if len(close) >= n:  # dx is defined from bar n-1 on (0/0 when flat counts as no direction)
        dx = dx[n - 1:]
        out[n - 1:] = _wilder(np.where(dx == dx, dx, 0.0), n)
    return out, tr


def rsi(close, n=14):
    d = close[1:] - close[:-1]
    moves = np.empty((2, len(d)))
    np.maximum(d, 0.0, out=moves[0])
    np.maximum(-d, 0.0, out=moves[1])
    gain, loss = _wilder(moves, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(loss == 0, 100.0, 100 - 100 / (1 + gain / loss))
    return np.concatenate(([np.nan], np.where(np.isnan(gain), np.nan, out)))


def log_returns(close):
    logs = np.log(close)
    return logs[1:] - logs[:-1]


def realized_vol(returns, n):
    """Sample standard deviation of the last n one-bar log returns (per bar, not annualized)."""
    r = returns[-n:]
    r = r - r.sum() / n
    return float(np.sqrt(r @ r / (n - 1)))
