"""Classifies each symbol as trending, ranging or volatile from its candles, with the figures that decided it."""
from vigil import indicators


def classify(candles, params):
    """candles: ndarray (n, 6) ts, open, high, low, close, volume -> SymbolState."""
    need = max(2 * params["adx_period"] + 10, params["vol_long"] + 2, params["vol_short"] + 2)
    if candles is None or len(candles) < need:
        have = 0 if candles is None else len(candles)
        return {"state": "unknown", "figures": {"bars": have},
                "reason": f"only {have} candles, {need} needed"}
    # A short recent window: enough for Wilder's smoothing to settle, cheap for 20+ symbols every cycle.
    c = candles[-max(5 * params["adx_period"], 2 * params["adx_period"] + 10):]
    adx, atr = indicators.adx_atr(c, params["adx_period"])
    close = candles[-params["vol_long"] - 1:, 4]
    atr_pct = atr / float(close[-1]) * 100
    returns = indicators.log_returns(close)
    long_vol = indicators.realized_vol(returns, params["vol_long"])
    short = indicators.realized_vol(returns, params["vol_short"])
    vol_ratio = short / long_vol if long_vol > 0 else 1.0
    figures = {"adx": round(adx, 2), "atr_pct": round(atr_pct, 4), "vol_ratio": round(vol_ratio, 3)}
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


def classify_all(candles_feed, symbols, venue, params):
    """Classifies every symbol from the venue's candles; a broken candle feed makes every state unknown."""
    if not candles_feed["ok"]:
        why = f"candles feed: {candles_feed['error']}"
        return {s: {"state": "unknown", "figures": {}, "reason": why} for s in symbols}
    by_symbol = (candles_feed["data"] or {}).get(venue, {})
    return {s: classify(by_symbol.get(s), params) for s in symbols}
