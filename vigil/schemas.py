"""Defines every dict that flows between modules and validates one against its schema."""
import math

NUM = (int, float)
ORDER_WORKING = ("pending", "open", "unknown")  # an order in these states is followed until it is final
POSITION_LIVE = ("opening", "open", "closing")  # a position in these states holds or may hold quantity
OPT_NUM = (int, float, type(None))
OPT_STR = (str, type(None))

# field -> (allowed types, check or None); a check returns an error text or None.
_SIDE = lambda v: None if v in ("buy", "sell") else "must be buy or sell"
_POS = lambda v: None if v > 0 else "must be > 0"
_NONNEG = lambda v: None if v >= 0 else "must be >= 0"
_UNIT = lambda v: None if 0 <= v <= 1 else "must be within 0..1"


def _one_of(*choices):
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}"


def _legs(schema):
    def check(legs):
        if not legs:
            return "needs at least one leg"
        for i, leg in enumerate(legs):
            err = problem(schema, leg)
            if err:
                return f"leg {i}: {err}"
        return None
    return check


SCHEMAS = {
    # One leg of a proposal: where and which way; sizes come from risk.
    "Leg": {
        "venue": (str, None), "symbol": (str, None), "side": (str, _SIDE),
        "market": (str, _one_of("swap", "spot")),
    },
    # One feed inside the Snapshot: its data, when it was observed, and whether to trust it.
    "Feed": {
        "data": (object, None), "ts": ((int, type(None)), None), "age_s": (OPT_NUM, None),
        "ok": (bool, None), "error": (OPT_STR, None),
    },
    # One symbol's running figures (None until enough bars are counted); vol_* are per-bar return deviations.
    "Trend": {"adx": (OPT_NUM, None), "atr": (OPT_NUM, None), "vol_short": (OPT_NUM, None),
              "vol_long": (OPT_NUM, None), "bars": (int, None)},
    # One symbol inside the MarketState.
    "SymbolState": {
        "state": (str, _one_of("trending", "ranging", "volatile", "unknown")),
        "figures": (dict, None), "reason": (str, None),
    },
    # What a strategy asks for: open a new position, or close one it owns.
    "TradeProposal": {
        "id": (str, None), "strategy": (str, None), "symbol": (str, None),
        "side": (str, _SIDE), "kind": (str, _one_of("directional", "spread")),
        "intent": (str, _one_of("open", "close")), "position_id": (OPT_STR, None),
        "legs": (list, _legs("Leg")), "confidence": (NUM, _UNIT), "entry": (NUM, _POS),
        "stop": (OPT_NUM, None), "target": (OPT_NUM, None), "max_hold_s": (NUM, _NONNEG),
        "reason": (str, lambda v: None if v.strip() else "must not be empty"),
        "created_at": (int, None),
    },
    # A strategy that has nothing to propose says why.
    "Idle": {"strategy": (str, None), "reason": (str, None)},
    # The sentiment veto: blocks every proposal of the cycle (exits only if blocks_exits).
    "Veto": {
        "strategy": (str, None), "reason": (str, None), "until": (int, None),
        "blocks_exits": (bool, None),
    },
    # One risk check with the figures that decided it.
    "Check": {
        "name": (str, None), "ok": (bool, None), "value": (OPT_NUM, None),
        "limit": (OPT_NUM, None), "detail": (str, None),
    },
    # A sized leg ready for the executor.
    "SizedLeg": {
        "venue": (str, None), "symbol": (str, None), "side": (str, _SIDE),
        "market": (str, _one_of("swap", "spot")), "qty": (NUM, _POS), "price": (NUM, _POS),
        "notional": (NUM, _POS),
    },
    # Risk's answer to one proposal; approved ones carry sized legs.
    "Verdict": {
        "proposal_id": (str, None), "approved": (bool, None), "checks": (list, None),
        "reason": (str, None),
    },
    "ApprovedTrade": {
        "proposal": (dict, lambda v: problem("TradeProposal", v)),
        "legs": (list, _legs("SizedLeg")), "checks": (list, None),
    },
    # An order row is written before the request is sent; id is the client order id.
    "Order": {
        "id": (str, None), "cycle": (int, None), "proposal_id": (str, None),
        "position_id": (str, None), "strategy": (str, None), "leg": (int, None),
        "venue": (str, None), "symbol": (str, None), "side": (str, _SIDE),
        "market": (str, _one_of("swap", "spot")),
        # stop, target: the exit of a level the last bar crossed; price is the level (the sim fills there).
        # venue_stop: a reduce-only stop-market resting at the venue, triggered when the price reaches price.
        "type": (str, _one_of("market", "stop", "target", "venue_stop")), "qty": (NUM, _POS), "price": (OPT_NUM, None),
        "ref_price": (OPT_NUM, None), "reduce_only": (bool, None),
        # pending: written, not yet answered; open: working at the venue; unknown: the answer proved nothing.
        # The other four are final: partial means done with part of the quantity (the rest expired).
        "status": (str, _one_of(*ORDER_WORKING, "filled", "partial", "cancelled", "rejected")),
        "filled": (NUM, _NONNEG), "avg_price": (OPT_NUM, None), "fee": (NUM, None),
        "fee_ccy": (str, None), "exchange_id": (OPT_STR, None), "error": (OPT_STR, None),
        "created_at": (int, None),
        # [first 'not found' (ms), 'not found' answers in a row] while a lookup has not found it yet
        "missing": ((list, type(None)), None),
    },
    # One execution, keyed by (venue, trade_id): a trade reported twice is stored once.
    "Fill": {
        "order_id": (str, None), "trade_id": (str, None), "venue": (str, None), "symbol": (str, None),
        "side": (str, _SIDE), "qty": (NUM, _POS), "price": (NUM, _POS), "fee": (NUM, None),
        "fee_ccy": (str, None), "fee_usdt": (NUM, None), "liquidity": (str, _one_of("maker", "taker")), "ts": (int, None),
    },
    # One leg of a position: opened_qty is the sum of its entry fills, qty what exit fills left of it.
    "PositionLeg": {
        "venue": (str, None), "symbol": (str, None), "side": (str, _SIDE),
        "market": (str, _one_of("swap", "spot")), "qty": (NUM, _NONNEG), "opened_qty": (NUM, _NONNEG),
        "entry": (NUM, _POS), "mark": (NUM, _POS), "funding": (NUM, None), "funding_ts": (int, None),
    },
    "Position": {
        "id": (str, None), "strategy": (str, None), "symbol": (str, None),
        "kind": (str, _one_of("directional", "spread")), "side": (str, _SIDE),
        "legs": (list, _legs("PositionLeg")), "opened_at": (int, None),
        "stop": (OPT_NUM, None), "target": (OPT_NUM, None), "exit_by": (int, None),
        # opening: entry orders working; void: they ended with nothing filled; closing: an exit started.
        "status": (str, _one_of("opening", "open", "closing", "closed", "void")), "fees": (NUM, None),
        "funding": (NUM, None), "realized_pnl": (NUM, None), "unrealized_pnl": (NUM, None),
        "closed_at": (OPT_NUM, None), "close_reason": (OPT_STR, None), "proposal_id": (str, None),
        "stop_order": (OPT_STR, None),  # the id of its stop resting at the venue, while one does
        "stop_held": (bool, None),  # the venue has confirmed that stop resting: until then Vigil watches it too
    },
    # How to write a strategy: a module vigil/NAME.py with PARAMS (its config section's keys, in config.py's table
    # form) and propose(ctx) -> a TradeProposal (schemas.proposal / exit_proposal), a Veto (its schema above: it
    # holds until "until"), an Idle ({"strategy", "reason"}: why nothing) or None. ctx is a StrategyContext (below); a
    # strategy imports no other strategy, nor the executor, risk or a broker, and keeps no state between calls.
    # Optional: warmup(params) -> the candles a symbol needs (config holds [market] history to it), and TRADES = False
    # for a strategy that never opens a position (a veto: it takes no share of the capital); quiet(candles, window,
    # feeds, params) -> the bars of one whole series (a bool array, or one bool for all) on which it surely proposes
    # nothing while it holds nothing, seeing the last window bars up to each and, besides candles, only the feeds
    # named (a backtest's); and EXITS = False for one that never proposes an exit (quiet whatever it holds). A
    # backtest asks no quiet strategy, and passes bars every strategy is quiet on without decisions (a strategy
    # without quiet() is never quiet). Add its name to [strategies] enabled, or leave enabled unset to run every
    # strategy module there is.
    "StrategyContext": {
        "cycle": (int, None), "now": (int, None), "name": (str, None), "params": (dict, None),
        "symbols": (list, None), "venues": (list, None), "trade_venue": (str, None),
        "market_state": (dict, None),  # {symbol: {"state", "figures", "reason"}}
        "snapshot": (dict, None),  # {"now", "feeds": {"candles": Feed of {venue: {symbol: (n, 6) array}}, **FEEDS}}
        "positions": (list, None),  # the strategy's own live Positions
    },
    # What the cycle did, one row per cycle.
    "CycleRecord": {
        "n": (int, None), "started_at": (int, None), "duration_ms": (NUM, _NONNEG),
        "states": (dict, None), "feeds": (dict, None), "strategies": (dict, None),
        "veto": ((dict, type(None)), None), "verdicts": (list, None), "orders": (int, None),
        "equity": (NUM, None), "halted": (bool, None), "notes": (list, None),
        # paper and live: ms from the latest candle's close to the decision and to the first order sent
        "latency_ms": ((dict, type(None)), None),
    },
}


# The side feeds every Source answers for, beside the candles.
FEEDS = ("funding", "onchain", "fear_greed", "social", "liquidations")

# What the orchestrator asks of a Source (SimMarket, PaperSource, BacktestSource, RecordedSource), by method:
SOURCE = {
    "start": "async (): opens streams and connections",
    "close": "async (): closes them",
    "tick": "async () -> ms: waits for the next cycle's moment and returns its time (market or wall clock)",
    "candles": "() -> Feed of {venue: {symbol: (n, 6) array of ts, open, high, low, close, volume}}, closed only",
    "feeds": "async (now ms) -> {name: Feed} for every name in FEEDS",
    "bar": "(venue, symbol) -> Bar of the latest closed candle, or None",
}
# What the executor asks of a Broker (SimBroker, LiveBroker); each returns (Order as answered, [Fill]):
BROKER = {
    "place": "async (Order) -> sends it once under its client id; working, final or unknown",
    "resolve": "async (Order) -> what became of it, asked by its client id",
    "cancel": "async (Order) -> cancels it, then what became of it (it may have filled first)",
}


def nonfinite(data, path=""):
    """Where data (a feed's dicts and lists) holds a nan or inf, or None: such a number never reaches a decision."""
    if isinstance(data, float):
        return None if math.isfinite(data) else path or "value"
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, (list, tuple)) else ()
    for key, value in items:
        where = nonfinite(value, f"{path}.{key}" if path else str(key))
        if where:
            return where
    return None


def feed(data=None, ts=None, error=None):
    """A Feed dict: an error text marks it failed; the orchestrator stamps its age."""
    return {"data": data, "ts": ts, "age_s": None, "ok": error is None, "error": error}


# A candle array is (n, 6) floats, one row per closed candle, oldest first; its columns are read by these names.
TS, OPEN, HIGH, LOW, CLOSE, VOLUME = range(6)


def bar(row):
    """A Bar dict (what the fill model and marking read) from one candle row: ts, open, high, low, close, volume.

    Plain floats, not numpy scalars: every price, mark and PnL downstream is computed from these.
    """
    ts, o, h, l, c, v = row[:6].tolist()
    return {"ts": int(ts), "open": o, "high": h, "low": l, "close": c, "volume": v}


class SchemaError(ValueError):
    """A dict that does not match its schema; the message names the key."""


def problem(name, d):
    """Returns the first mismatch of dict d against schema name, or None."""
    if not isinstance(d, dict):
        return f"expected a dict, got {type(d).__name__}"
    schema = SCHEMAS[name]
    for key, (types, check) in schema.items():
        if key not in d:
            return f"{key}: missing"
        v = d[key]
        if not isinstance(v, types) or v.__class__ is bool and types is not bool:  # a bool is an int, not a number
            return f"{key}: expected {_names(types)}, got {type(v).__name__}"
        if check is not None and v is not None:
            err = check(v)
            if err:
                return f"{key}: {err}"
    if len(d) > len(schema):  # every key is checked above: more keys than that means an undeclared one
        return f"{sorted(set(d) - schema.keys())[0]}: not in the schema"
    return None


def validate(name, d):
    """Returns d if it matches schema name, else raises SchemaError naming the key."""
    err = problem(name, d)
    if err:
        raise SchemaError(f"{name}.{err}")
    return d


def _names(types):
    return " or ".join("None" if t is type(None) else t.__name__ for t in (types if isinstance(types, tuple) else (types,)))


def opposite(side):
    """The side that reverses side: an exit, a stop."""
    return "sell" if side == "buy" else "buy"


def proposal(ctx, *, symbol, side, legs, entry, stop, target, confidence, reason, kind="directional", max_hold_s=0.0):
    """A TradeProposal to open, with the id and time every strategy must use."""
    return {"id": f"{ctx['cycle']}:{ctx['name']}:{symbol}:open", "strategy": ctx["name"], "symbol": symbol,
            "side": side, "kind": kind, "intent": "open", "position_id": None, "legs": legs,
            "confidence": min(1.0, max(0.0, confidence)), "entry": entry, "stop": stop, "target": target,
            "max_hold_s": max_hold_s, "reason": reason, "created_at": ctx["now"]}


def exit_proposal(ctx, position, reason):
    """A TradeProposal that closes one of the strategy's own positions, every leg reversed."""
    legs = [{"venue": leg["venue"], "symbol": leg["symbol"], "side": opposite(leg["side"]), "market": leg["market"]}
            for leg in position["legs"]]
    return {"id": f"{ctx['cycle']}:{ctx['name']}:{position['symbol']}:close", "strategy": ctx["name"],
            "symbol": position["symbol"], "side": legs[0]["side"], "kind": position["kind"], "intent": "close",
            "position_id": position["id"], "legs": legs, "confidence": 1.0, "entry": position["legs"][0]["mark"],
            "stop": None, "target": None, "max_hold_s": 0, "reason": reason, "created_at": ctx["now"]}
