"""Proposes a breakout trade when a trending symbol closes out of a tight range on heavy volume."""
import numpy as np

from vigil import indicators, schemas
from vigil.schemas import CLOSE, HIGH, LOW, VOLUME

EXITS = False  # it never proposes an exit: its positions end at their stop, target or time
PARAMS = {
    "range_bars": (int, 30, 5, 500, "bars of the consolidation range before the breakout bar"),
    "max_range_pct": (float, 1.5, 0.05, 50.0, "range height as % of price at most (a consolidation)"),
    "volume_factor": (float, 1.5, 1.0, 20.0, "breakout bar volume / average range volume at least"),
    "atr_period": (int, 14, 2, 200, "ATR period for the stop"),
    "stop_atr": (float, 1.5, 0.1, 20.0, "stop distance beyond the range in ATRs"),
    "reward_risk": (float, 2.0, 0.2, 20.0, "target distance / stop distance"),
    "max_hold_s": (float, 14400.0, 0.0, 2592000.0, "time exit in seconds (0 = none)"),
}


def warmup(params):
    """Candles a symbol needs before this strategy can judge it (the config holds history to at least this)."""
    return params["range_bars"] + params["atr_period"] + 2


def propose(ctx):
    name, params = ctx["name"], ctx["params"]
    best, why = indicators.strongest(ctx, "trending", warmup(params),
                                     lambda symbol, c: _breakout(symbol, c, params),
                                     "no breakout with volume confirmation")
    if best is None:
        return {"strategy": name, "reason": why}
    strength, found = best
    legs = [{"venue": ctx["trade_venue"], "symbol": found["symbol"], "side": found["side"], "market": "swap"}]
    return schemas.proposal(ctx, **found, legs=legs, confidence=strength / 5, max_hold_s=params["max_hold_s"])


def quiet(candles, window, feeds, params):
    """The bars on which _breakout finds nothing: the close inside the range before it, a range too tall or without
    volume, or volume too thin (a rounding's worth of slack, 1e-9, on the volume mean, which numpy sums in another
    order)."""
    n, c = params["range_bars"], candles
    out = np.zeros(len(c), bool)
    if len(c) <= n:
        return out
    high = np.lib.stride_tricks.sliding_window_view(c[:-1, HIGH], n).max(axis=1)
    low = np.lib.stride_tricks.sliding_window_view(c[:-1, LOW], n).min(axis=1)
    volume = np.lib.stride_tricks.sliding_window_view(c[:-1, VOLUME], n).mean(axis=1)
    close = c[n:, CLOSE]
    out[n:] = (((low <= close) & (close <= high)) | ((high - low) / close * 100 > params["max_range_pct"])
               | (volume <= 0) | (c[n:, VOLUME] < params["volume_factor"] * volume * (1 - 1e-9)))
    return out


def _breakout(symbol, c, params):
    n = params["range_bars"]
    box = c[-n - 1:-1]
    high, low, close = float(box[:, HIGH].max()), float(box[:, LOW].min()), float(c[-1, CLOSE])
    if low <= close <= high:  # still inside the range: most bars end here
        return None
    height, average = (high - low) / close * 100, float(box[:, VOLUME].mean())
    if height > params["max_range_pct"] or average <= 0:  # a range that traded nothing confirms no volume
        return None
    vol_ratio = float(c[-1, VOLUME]) / average
    if vol_ratio < params["volume_factor"]:
        return None
    side, edge = ("buy", high) if close > high else ("sell", low)
    atr = indicators.atr(c, params["atr_period"])
    sign = 1 if side == "buy" else -1
    stop = (low if side == "buy" else high) - sign * params["stop_atr"] * atr
    target = close + sign * params["reward_risk"] * abs(close - stop)
    strength = vol_ratio * abs(close - edge) / max(atr, 1e-12)
    reason = (f"{symbol} closed at {close:,.2f} {'above' if side == 'buy' else 'below'} its {n}-bar range "
              f"{'high' if side == 'buy' else 'low'} {edge:,.2f} ({height:.2f}% tall) on {vol_ratio:.1f}x "
              f"average volume while trending")
    return strength, {"symbol": symbol, "side": side, "entry": close, "stop": float(stop), "target": float(target),
                      "reason": reason}
