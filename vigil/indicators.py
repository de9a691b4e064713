"""Computes what the candle strategies read: indicators over numpy price windows (NaN if the window is too short)
and the strongest signal among the symbols in one market state."""
import functools

import numpy as np

from vigil.schemas import CLOSE, HIGH, LOW


@functools.lru_cache(maxsize=64)
def _weights(n, m):
    """w with x @ w = Wilder's smoothing (y += (x - y) / n, seeded with the mean of the first n) at the m-th value.

    The smoothing is linear in x, so a dot product with these weights replaces a Python loop per bar.
    """
    w = (1.0 - 1.0 / n) ** np.arange(m - 1, -1, -1.0) / n
    w[:n] = w[n - 1]
    return w


def wilder(x, n):
    """The last Wilder-smoothed value of x (of each row of a 2-D x)."""
    m = np.shape(x)[-1]
    return x @ _weights(n, m) if m >= n else np.full(np.shape(x)[:-1], np.nan)


def wilder_series(x, n, last=None):
    """wilder() at every value of x at once, going on from last, or (last None) seeded with the mean of the first n
    values (nan before): y_t = a * y_(t-1) + x_t / n with a = 1 - 1/n.

    Summed by doubling: after the pass with shift s, each y_t holds its last 2s terms, so 20 passes cover a year of
    1m bars; every power of a is at most 1, and there is no matrix product (BLAS would spread it over idle cores)."""
    y = np.full(len(x), np.nan)
    first = 0
    if last is None:
        if len(x) < n:
            return y
        last = y[n - 1] = x[:n].sum() / n
        first = n
    a, z = 1.0 - 1.0 / n, x[first:] / n
    s = 1
    while s < len(z):
        z[s:] += a ** s * z[:-s]
        s *= 2
    with np.errstate(under="ignore"):
        y[first:] = z + last * a ** np.arange(1, len(z) + 1)
    return y


def true_range(c):
    """max(high, previous close) - min(low, previous close) per bar of an OHLCV array: the three-way max, cheaper."""
    tr = c[:, HIGH] - c[:, LOW]
    tr[1:] = np.maximum(c[1:, HIGH], c[:-1, CLOSE]) - np.minimum(c[1:, LOW], c[:-1, CLOSE])
    return tr


def atr(c, n=14):
    return float(wilder(true_range(c), n))


def rsi(close, n=14):
    d = close[1:] - close[:-1]
    gain, loss = wilder(np.maximum(np.stack((d, -d)), 0.0), n)
    if gain != gain:
        return float("nan")
    return 100.0 if loss == 0 else float(100 - 100 / (1 + gain / loss))


def rsi_windows(close, n, window):
    """rsi(close[j - window + 1:j + 1], n) for every j from window - 1 on, at once: the same weights slid along the
    gains and losses (tests hold it to rsi() within 1e-9)."""
    d = close[1:] - close[:-1]
    if window - 1 < n or len(d) < window - 1:
        return np.full(max(0, len(close) - window + 1), np.nan)
    w = _weights(n, window - 1)
    gain, loss = np.correlate(np.maximum(d, 0.0), w, "valid"), np.correlate(np.maximum(-d, 0.0), w, "valid")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(loss == 0, 100.0, 100 - 100 / (1 + gain / loss))


def strongest(ctx, state, min_bars, signal, no_signal):
    """signal(symbol, candles) -> (strength, the proposal's fields: symbol, side, entry, stop, target, reason) or
    None.

    Returns (best tuple, None) or (None, one sentence why nothing qualified). Symbols the strategy already
    holds are skipped.
    """
    candles = ctx["snapshot"]["feeds"]["candles"]
    if not candles["ok"]:
        return None, f"candles feed unavailable: {candles['error']}"
    held = {p["symbol"] for p in ctx["positions"]}
    best, why = None, f"no {state} symbol"
    for symbol in ctx["symbols"]:
        known = ctx["market_state"][symbol]
        if known["state"] != state:
            if known["state"] == "unknown":  # e.g. too little history: the one case where the reason matters
                why = f"{symbol} market state unknown: {known['reason']}"
            continue
        if symbol in held:
            why = f"already holds {symbol}"
            continue
        c = candles["data"].get(ctx["trade_venue"], {}).get(symbol)
        if c is None or len(c) < min_bars:
            why = f"not enough {symbol} candles"
            continue
        found = signal(symbol, c)
        if found and (best is None or found[0] > best[0]):
            best = found
        elif not found and best is None:
            why = no_signal
    return best, why
