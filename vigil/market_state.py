"""Classifies each symbol as trending, ranging or volatile from its running figures, with the reason."""


def classify(candles, trend, params):
    """candles: ndarray (n, 6) ts, open, high, low, close, volume; trend: its running figures -> SymbolState."""
    need = max(2 * params["adx_period"] + 10, params["vol_long"] + 2, params["vol_short"] + 2)
    have = min(0 if candles is None else len(candles), trend["bars"] if trend else 0)
    if have < need:  # need covers ADX (2n - 1 bars) and both volatility windows
        return {"state": "unknown", "figures": {"bars": have}, "reason": f"only {have} candles, {need} needed"}
    adx, atr_pct = trend["adx"], trend["atr"] / float(candles[-1, 4]) * 100
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
