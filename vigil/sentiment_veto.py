"""Vetoes every proposal of the cycle when Fear & Greed is extreme or liquidations surge."""
TRADES = False  # it vetoes and never opens a position: it has no capital of its own
PARAMS = {
    "extreme_fear": (int, 10, 0, 50, "Fear & Greed at or below this vetoes"),
    "extreme_greed": (int, 90, 50, 100, "Fear & Greed at or above this vetoes"),
    "liquidations_usd": (float, 100_000_000.0, 0.0, 1e13, "liquidations in the window across symbols that veto"),
    "hold_s": (float, 900.0, 0.0, 86400.0, "a veto lasts at least this long"),
    "blocks_exits": (bool, False, None, None, "also block exits (default: exits are always allowed)"),
}


def quiet(candles, window, feeds, params):
    """Without Fear & Greed or liquidations it has no evidence to veto on."""
    return not {"fear_greed", "liquidations"} & set(feeds)


def propose(ctx):
    name, params, now = ctx["name"], ctx["params"], ctx["now"]
    feeds = ctx["snapshot"]["feeds"]
    reasons, missing = [], []
    fng = feeds["fear_greed"]
    if fng["ok"]:
        value = fng["data"]["value"]
        if value <= params["extreme_fear"]:
            reasons.append(f"Fear & Greed {value} ({fng['data']['label']}) at or below {params['extreme_fear']}")
        elif value >= params["extreme_greed"]:
            reasons.append(f"Fear & Greed {value} ({fng['data']['label']}) at or above {params['extreme_greed']}")
    else:
        missing.append(f"fear_greed ({fng['error']})")
    liq = feeds["liquidations"]
    if liq["ok"]:
        total = sum(v["long_usd"] + v["short_usd"] for v in liq["data"].values())
        if total >= params["liquidations_usd"]:
            window = max((v["window_s"] for v in liq["data"].values()), default=0)
            reasons.append(f"${total / 1e6:.0f}M liquidated in {window:.0f}s, above "
                           f"${params['liquidations_usd'] / 1e6:.0f}M")
    else:
        missing.append(f"liquidations ({liq['error']})")
    if reasons:
        return {"strategy": name, "reason": "; ".join(reasons), "until": now + int(params["hold_s"] * 1000),
                "blocks_exits": params["blocks_exits"]}
    if missing:
        return {"strategy": name, "reason": f"cannot judge {', '.join(missing)}; no veto without evidence"}
    return {"strategy": name, "reason": "sentiment within bounds"}
