import ast
import asyncio
import configparser
import importlib
import pathlib
import shutil
import subprocess
import sys
import types

import numpy as np
import pytest

from vigil import cli, config, schemas

STRATEGIES = ["funding_arb", "smart_money", "momentum", "mean_reversion", "sentiment_veto"]
ROOT = pathlib.Path(__file__).resolve().parent.parent
H = 3_600_000
NOW = 1_000 * H


def ok(data):
    return {"data": data, "ts": NOW, "age_s": 0.0, "ok": True, "error": None}


BROKEN = {"data": None, "ts": None, "age_s": None, "ok": False, "error": "stale: 900s old"}


def candles(closes, volumes=None, spread=0.001):
    closes = np.asarray(closes, float)
    volumes = np.full(len(closes), 100.0) if volumes is None else np.asarray(volumes, float)
    ts = np.arange(len(closes)) * 60_000.0
    opens = np.concatenate(([closes[0]], closes[:-1]))
    return np.column_stack((ts, opens, np.maximum(opens, closes) * (1 + spread),
                            np.minimum(opens, closes) * (1 - spread), closes, volumes))


def ctx(name, state="trending", feeds=None, positions=(), c=None, symbols=("BTC/USDT",)):
    module = importlib.import_module(f"vigil.{name}")
    params = {k: spec[1] for k, spec in module.PARAMS.items()}
    c = candles(np.full(100, 100.0)) if c is None else c
    all_feeds = {"candles": ok({"binance": {s: c for s in symbols}}), "funding": BROKEN, "onchain": BROKEN,
                 "fear_greed": BROKEN, "social": BROKEN, "liquidations": BROKEN}
    all_feeds.update(feeds or {})
    return module, {"name": name, "cycle": 7, "now": NOW, "params": params, "symbols": list(symbols),
                    "venues": ["binance", "bybit"], "trade_venue": "binance",
                    "market_state": {s: {"state": state, "figures": {}, "reason": ""} for s in symbols},
                    "snapshot": {"now": NOW, "feeds": all_feeds}, "positions": list(positions)}


def run(name, **kw):
    module, c = ctx(name, **kw)
    return module.propose(c)


# --- momentum ---------------------------------------------------------------------------------
def breakout(last_close=103.0, last_volume=400.0):
    closes = list(100 + 0.2 * np.sin(np.arange(99))) + [last_close]
    return candles(closes, [100.0] * 99 + [last_volume])


def test_momentum_breaks_out_with_volume_in_a_trend():
    p = run("momentum", c=breakout())
    schemas.validate("TradeProposal", p)
    assert p["side"] == "buy" and p["stop"] < 100 < p["entry"] < p["target"]
    assert "above its 30-bar range high" in p["reason"] and "4.0x average volume" in p["reason"]


def test_momentum_needs_volume_trend_and_a_break():
    assert "reason" in run("momentum", c=breakout(last_volume=110.0)) and "kind" not in run(
        "momentum", c=breakout(last_volume=110.0))
    assert "kind" not in run("momentum", c=breakout(), state="ranging")
    assert "kind" not in run("momentum", c=breakout(last_close=100.1))
    assert run("momentum", c=breakout(last_close=97.0))["side"] == "sell"
    silent = candles(list(100 + 0.2 * np.sin(np.arange(99))) + [103.0], [0.0] * 99 + [400.0])  # an illiquid range
    assert run("momentum", c=silent) == {"strategy": "momentum", "reason": "no breakout with volume confirmation"}


def test_an_unknown_market_state_is_named_with_its_reason():
    for name in ("momentum", "mean_reversion"):
        module, c = ctx(name, state="unknown")
        c["market_state"]["BTC/USDT"]["reason"] = "only 12 candles, 27 needed"
        assert module.propose(c)["reason"] == "BTC/USDT market state unknown: only 12 candles, 27 needed"


# --- mean reversion ---------------------------------------------------------------------------
def stretched(last):
    closes = list(100 + 0.3 * np.sin(np.arange(95) / 2)) + list(np.linspace(100, last, 6)[1:])
    return candles(closes)


def test_mean_reversion_fades_overextension_in_a_range():
    p = run("mean_reversion", state="ranging", c=stretched(96.0))
    schemas.validate("TradeProposal", p)
    assert p["side"] == "buy" and p["target"] > p["entry"] > p["stop"] and "standard deviations below" in p["reason"]
    assert run("mean_reversion", state="ranging", c=stretched(104.0))["side"] == "sell"
    assert "kind" not in run("mean_reversion", state="trending", c=stretched(96.0))
    assert "kind" not in run("mean_reversion", state="ranging", c=stretched(100.2))


def test_mean_reversion_closes_when_the_range_ends():
    pos = {"id": "p1", "symbol": "BTC/USDT", "kind": "directional", "status": "open",
           "legs": [{"venue": "binance", "symbol": "BTC/USDT", "side": "buy", "market": "swap", "qty": 1.0,
                     "entry": 100.0, "mark": 99.0, "funding": 0.0}]}
    p = run("mean_reversion", state="volatile", positions=[pos])
    assert p["intent"] == "close" and p["position_id"] == "p1" and p["legs"][0]["side"] == "sell"
    # Trending right after the fade is the overextension itself: held, with the stop as the guard.
    assert "kind" not in run("mean_reversion", state="trending", positions=[pos])
    # Still ranging and stretched again: no second position on the symbol, and the reason says why.
    held = run("mean_reversion", state="ranging", c=stretched(96.0), positions=[pos])
    assert held == {"strategy": "mean_reversion", "reason": "already holds BTC/USDT"}


# --- funding arbitrage ------------------------------------------------------------------------
def funding(binance, bybit, bybit_hours=8.0):
    return ok({"BTC/USDT": {"binance": {"rate": binance, "interval_h": 8.0, "next_ts": NOW + H, "mark": 100.0},
                            "bybit": {"rate": bybit, "interval_h": bybit_hours, "next_ts": NOW + H,
                                      "mark": 100.1}}})


def test_funding_arb_shorts_the_venue_that_pays_more():
    p = run("funding_arb", feeds={"funding": funding(0.0001, 0.0008)})
    schemas.validate("TradeProposal", p)
    assert p["kind"] == "spread"
    assert {(l["venue"], l["side"]) for l in p["legs"]} == {("binance", "buy"), ("bybit", "sell")}
    # 0.0008 * 3 * 365 - 0.0001 * 3 * 365 = 76.65% gross; costs 4 * 0.0008 * 365 / 3 = 38.93%
    assert "37.7% net" in p["reason"]


def test_funding_arb_respects_intervals_and_costs():
    # bybit's 0.0004 every 4h is the same yearly rate as 0.0008 every 8h
    assert run("funding_arb", feeds={"funding": funding(0.0001, 0.0004, 4.0)})["kind"] == "spread"
    assert "below the 25% entry threshold" in run("funding_arb", feeds={"funding": funding(0.0001, 0.0004)})["reason"]


def test_funding_arb_exits_on_compression_or_flip():
    pos = {"id": "p9", "symbol": "BTC/USDT", "kind": "spread", "status": "open", "legs": [
        {"venue": "binance", "symbol": "BTC/USDT", "side": "buy", "market": "swap", "qty": 1.0, "entry": 100.0,
         "mark": 100.0, "funding": 0.0},
        {"venue": "bybit", "symbol": "BTC/USDT", "side": "sell", "market": "swap", "qty": 1.0, "entry": 100.0,
         "mark": 100.0, "funding": 0.0}]}
    held = run("funding_arb", feeds={"funding": funding(0.0001, 0.0008)}, positions=[pos])
    assert "kind" not in held  # still wide: hold, and no second spread on the same symbol
    compressed = run("funding_arb", feeds={"funding": funding(0.0001, 0.00013)}, positions=[pos])
    assert compressed["intent"] == "close" and "compressed" in compressed["reason"]
    flipped = run("funding_arb", feeds={"funding": funding(0.0005, 0.0001)}, positions=[pos])
    assert flipped["intent"] == "close" and "flipped" in flipped["reason"]
    assert {l["side"] for l in flipped["legs"]} == {"buy", "sell"}


# --- smart money ------------------------------------------------------------------------------
def transfer(i, usd, flow="inflow", age_s=60, asset="BTC"):
    return {"id": f"t{i}", "ts": NOW - age_s * 1000, "asset": asset, "usd": usd, "from": "a", "to": "b", "flow": flow}


def onchain(transfers):
    return {"onchain": ok({"window_s": 3600, "transfers": transfers})}


def test_smart_money_sells_on_coordinated_inflows():
    p = run("smart_money", feeds=onchain([transfer(i, 10e6) for i in range(3)]))
    schemas.validate("TradeProposal", p)
    assert p["side"] == "sell" and p["stop"] > p["entry"] > p["target"]
    assert "net inflow to exchanges in 3 BTC transfers" in p["reason"]
    assert run("smart_money", feeds=onchain([transfer(i, 10e6, "outflow") for i in range(3)]))["side"] == "buy"


def test_smart_money_dedupes_ignores_small_and_decays():
    same = [transfer(0, 10e6)] * 3 + [transfer(1, 10e6)]
    assert "kind" not in run("smart_money", feeds=onchain(same))  # only 2 distinct transfers
    small = [transfer(i, 10e6) for i in range(2)] + [transfer(i + 5, 0.5e6) for i in range(5)]
    assert "kind" not in run("smart_money", feeds=onchain(small))
    old = [transfer(i, 10e6, age_s=3 * 3600) for i in range(3)]
    assert "kind" not in run("smart_money", feeds=onchain(old))  # three half-lives... six: far below
    pos = {"id": "p", "symbol": "BTC/USDT"}
    assert "kind" not in run("smart_money", feeds=onchain([transfer(i, 10e6) for i in range(3)]), positions=[pos])


# --- sentiment veto ---------------------------------------------------------------------------
def sentiment(value, liq_usd=0.0):
    return {"fear_greed": ok({"value": value, "label": "x", "ts": NOW}),
            "liquidations": ok({"BTC/USDT": {"long_usd": liq_usd, "short_usd": 0.0, "window_s": 300}})}


def test_veto_at_extremes_and_on_liquidation_bursts():
    v = run("sentiment_veto", feeds=sentiment(8))
    schemas.validate("Veto", v)
    assert "Fear & Greed 8" in v["reason"] and v["until"] == NOW + 900_000 and v["blocks_exits"] is False
    assert "until" in run("sentiment_veto", feeds=sentiment(95))
    assert "until" not in run("sentiment_veto", feeds=sentiment(50))
    assert "liquidated" in run("sentiment_veto", feeds=sentiment(50, 2e8))["reason"]


def test_veto_blocks_exits_only_if_configured():
    module, c = ctx("sentiment_veto", feeds=sentiment(5))
    c["params"]["blocks_exits"] = True
    assert module.propose(c)["blocks_exits"] is True


# --- every strategy ---------------------------------------------------------------------------
@pytest.mark.parametrize("name, feed", [("momentum", "candles"), ("mean_reversion", "candles"),
                                        ("funding_arb", "funding"), ("smart_money", "onchain"),
                                        ("sentiment_veto", "fear_greed")])
def test_missing_feed_means_idle_with_a_reason(name, feed):
    out = run(name, state="ranging", feeds={feed: BROKEN} if feed == "candles" else None)
    assert set(out) == {"strategy", "reason"} and feed in out["reason"]


def test_no_strategy_imports_another_strategy_the_executor_or_risk():
    forbidden = set(STRATEGIES) | {"executor", "risk", "orchestrator", "sim", "live_broker"}
    for name in STRATEGIES:
        tree = ast.parse((ROOT / "vigil" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [a.name for a in node.names]
            for n in names:
                assert n.split(".")[-1] not in forbidden - {name}, f"{name} imports {n}"


def test_the_loop_runs_with_each_strategy_file_deleted(tmp_path):
    """Delete a strategy's file and its config lines: the rest of the tree runs unchanged."""
    for gone in STRATEGIES:
        tree = tmp_path / gone
        shutil.copytree(ROOT / "vigil", tree / "vigil", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(ROOT / "run.py", tree / "run.py")
        (tree / "vigil" / f"{gone}.py").unlink()
        cfg = configparser.ConfigParser(interpolation=None)
        cfg.optionxform = str
        cfg.read(ROOT / "vigil.cfg")
        cfg.remove_section(gone)
        cfg["strategies"]["enabled"] = ", ".join(s for s in STRATEGIES if s != gone)
        with open(tree / "vigil.cfg", "w") as f:
            cfg.write(f)
        out = subprocess.run([sys.executable, "run.py", "--cycles", "200", "--interval", "0"], cwd=tree,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert len(out.stdout.splitlines()) == 200
        # a config that names no strategies runs the ones there are
        (tree / "bare.cfg").write_text(f"[vigil]\ndb = {tree}/bare.db\n")
        out = subprocess.run([sys.executable, "run.py", "--config", "bare.cfg", "--cycles", "5", "--interval", "0"],
                             cwd=tree, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr


def test_every_source_and_broker_keeps_the_contract_written_in_schemas_and_strategies_get_a_context():
    import inspect
    from vigil import backtest, flight, live_broker, paper_source, sim
    for source in (sim.SimMarket, paper_source.PaperSource, backtest.BacktestSource, flight.RecordedSource):
        for name, what in schemas.SOURCE.items():
            method = getattr(source, name)
            assert inspect.iscoroutinefunction(method) == what.startswith("async"), (source, name)
            assert len(inspect.signature(method).parameters) - 1 == what.split("->")[0].count(",") + (
                "()" not in what), (source, name)
    for broker in (sim.SimBroker, live_broker.LiveBroker):
        for name in schemas.BROKER:
            assert inspect.iscoroutinefunction(getattr(broker, name)), (broker, name)
            assert list(inspect.signature(getattr(broker, name)).parameters)[:2] == ["self", "order"]


def test_what_a_strategy_receives_matches_its_schema(tmp_path, monkeypatch):
    from vigil import decide as decide_module
    seen = []
    real = decide_module.decide

    def checking(cfg, strategies, inputs, rec, step, save):
        wrapped = {}
        for name, module in strategies.items():
            def propose(ctx, module=module):
                seen.append(schemas.problem("StrategyContext", ctx))
                return module.propose(ctx)
            wrapped[name] = types.SimpleNamespace(propose=propose)
        return real(cfg, wrapped, inputs, rec, step, save)
    monkeypatch.setattr("vigil.orchestrator.decide", checking)
    path = tmp_path / "v.cfg"
    path.write_text(f"[vigil]\ndb = {tmp_path}/v.db\nconsole = false\n")
    orch = cli.build(config.load(path))
    asyncio.run(orch.run(cycles=50, interval=0))
    assert len(seen) >= 200 and set(seen) == {None}


def test_a_key_a_schema_does_not_declare_is_refused():
    veto = {"strategy": "sentiment_veto", "reason": "extreme fear", "until": 5, "blocks_exits": False}
    assert schemas.problem("Veto", veto) is None
    assert schemas.problem("Veto", dict(veto, untill=6)) == "untill: not in the schema"
    with pytest.raises(schemas.SchemaError, match="Veto.untill: not in the schema"):
        schemas.validate("Veto", dict(veto, untill=6))


@pytest.mark.parametrize("name, state", [("momentum", "trending"), ("mean_reversion", "ranging")])
def test_quiet_bars_are_bars_the_strategy_never_trades_on(name, state):
    """quiet() over a whole series names only bars on which propose(), shown the window up to that bar in the
    state it trades, proposes nothing; and it names most of them."""
    rng = np.random.default_rng(11)
    steps = rng.normal(0, 0.001, 3000) + np.where(rng.random(3000) < 0.02, rng.normal(0, 0.01, 3000), 0.0)
    closes = 100 * np.exp(np.cumsum(steps))
    volumes = rng.uniform(50, 150, 3000) * np.where(rng.random(3000) < 0.05, 4.0, 1.0)
    series, window = candles(closes, volumes), 120
    module = importlib.import_module(f"vigil.{name}")
    params = {k: spec[1] for k, spec in module.PARAMS.items()}
    quiet = module.quiet(series, window, set(), params)
    fired = []
    for j in range(window - 1, len(series)):
        out = run(name, state=state, c=series[j - window + 1:j + 1])
        if "kind" in out:
            fired.append(j)
            assert not quiet[j], f"{name} proposed at bar {j}, which quiet() named"
    assert len(fired) >= 5 and quiet.mean() > 0.8


def test_quiet_strategies_of_feeds_a_backtest_does_not_serve():
    c = candles(np.full(100, 100.0))
    for name, feed in (("funding_arb", "funding"), ("smart_money", "onchain"), ("sentiment_veto", "fear_greed")):
        module = importlib.import_module(f"vigil.{name}")
        params = {k: spec[1] for k, spec in module.PARAMS.items()}
        assert module.quiet(c, 50, set(), params) and not module.quiet(c, 50, {feed}, params)
