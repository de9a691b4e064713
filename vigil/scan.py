"""Finds the strongest per-symbol signal among a strategy's symbols in one market state."""


def strongest(ctx, state, min_bars, signal, no_signal):
    """signal(symbol, candles) -> tuple starting with its strength, or None.

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
