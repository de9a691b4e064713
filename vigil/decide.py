"""Makes a cycle's decisions (market state, strategies, veto, risk) as a pure function of its recorded inputs."""
import logging

from vigil import market_state, risk, schemas

log = logging.getLogger("vigil.decide")


def _noop(*_):
    pass


def decide(cfg, strategies, inputs, rec, step=_noop, save=_noop):
    """Fills rec (states, strategies, veto, verdicts) and returns [(Verdict, ApprovedTrade or None)].

    inputs: n, now, candles (Feed), trend {symbol: Trend}, feeds {name: Feed}, positions, equity,
    day_start_equity, prices {(venue, symbol): price}, veto (the one still active, or None), paused [names],
    entries_stopped (no strategy opens anything; absent in records older than it), quiet [names of strategies that
    surely propose nothing on this bar while they hold nothing, or whatever they hold for one with EXITS = False: a
    backtest's, from their quiet(); else absent].
    step(name) is called before each step (the kill switch raises there); save(kind, items) persists
    proposals and verdicts before the next step reads them. Replay calls it with the recorded inputs.
    """
    n, now = inputs["n"], inputs["now"]
    market = cfg["market"]
    step("market_state")
    states = market_state.classify_all(inputs["candles"], inputs.get("trend", {}), market["symbols"],
                                       market["trade_venue"], cfg["market_state"])
    rec["states"] = {s: v["state"] for s, v in states.items()}
    snapshot = {"now": now, "feeds": {"candles": inputs["candles"], **inputs["feeds"]}}

    step("strategies")
    proposals, veto = [], None
    shared = {"cycle": n, "now": now, "symbols": market["symbols"], "venues": market["venues"],
              "trade_venue": market["trade_venue"], "market_state": states, "snapshot": snapshot}
    paused, positions, said, quiet = inputs["paused"], inputs["positions"], rec["strategies"], inputs.get("quiet", ())
    for name, module in strategies.items():
        own = [p for p in positions if p["strategy"] == name]
        if (name in paused or inputs.get("entries_stopped")) and not own:
            said[name] = "paused" if name in paused else "entries stopped"
            continue
        if name in quiet and (not own or not getattr(module, "EXITS", True)):
            said[name] = "no signal: quiet on this bar"
            continue
        ctx = dict(shared, name=name, params=cfg[name], positions=own)
        try:
            out = module.propose(ctx)
            kind = _checked(out)
        except Exception as e:  # one strategy failing must not stop the others
            log.exception("strategy %s failed", name)
            said[name] = f"error: {type(e).__name__}: {e}"
            continue
        if kind is None:
            said[name] = "no signal"
        elif kind == "Idle":
            said[name] = out["reason"]
        elif kind == "Veto":
            veto = out
            said[name] = f"veto: {out['reason']}"
        elif out["intent"] == "open" and (name in paused or inputs.get("entries_stopped")):
            said[name] = ("paused" if name in paused else "entries stopped") + ": entries only, its exits go on"
        elif out["intent"] == "close" and _status(positions, out["position_id"]) != "open":
            # opening: nothing to close yet; closing: one exit at a time, the tracker follows it to the end
            said[name] = f"exit of {out['position_id']} not sent: it is {_status(positions, out['position_id'])}"
        else:
            proposals.append(out)
            said[name] = f"{out['intent']} {out['side']} {out['symbol']}: {out['reason']}"
    save("proposals", proposals)

    step("veto")
    active = inputs["veto"]
    if veto is None and active and active["until"] > now:
        veto = active  # a veto holds until its 'until' even if the extreme has eased
    rec["veto"] = veto
    if veto:
        blocked = [p for p in proposals if p["intent"] == "open" or veto["blocks_exits"]]
        proposals = [p for p in proposals if p not in blocked]
        vetoed = [{"proposal_id": p["id"], "approved": False, "checks": [], "reason": f"vetoed: {veto['reason']}"}
                  for p in blocked]
        rec["verdicts"] += vetoed
        save("verdicts", vetoed)

    step("risk")
    if not proposals:
        return []
    verdicts = risk.evaluate(proposals, {
        "now": now, "equity": inputs["equity"], "day_start_equity": inputs["day_start_equity"],
        "positions": inputs["positions"], "prices": inputs["prices"]}, cfg["risk"])
    judged = [schemas.validate("Verdict", v) for v, _ in verdicts]
    rec["verdicts"] += judged
    save("verdicts", judged)
    return verdicts


def _status(positions, position_id):
    return next((p["status"] for p in positions if p["id"] == position_id), "unknown")


def _checked(out):
    """The schema of a strategy's answer, after checking the answer against it; None for no answer."""
    if out is None:
        return None
    kind = "TradeProposal" if "kind" in out else "Veto" if "until" in out else "Idle"
    schemas.validate(kind, out)
    return kind
