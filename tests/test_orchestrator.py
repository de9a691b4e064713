import asyncio
import json
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

from vigil import cli, config, risk, schemas
from vigil.storage import Storage

ROOT = Path(__file__).resolve().parent.parent


def make(tmp_path, extra="", enabled="momentum, mean_reversion"):
    path = tmp_path / "v.cfg"
    path.write_text(f"[vigil]\ndb = {tmp_path}/v.db\nconsole = false\n"
                    f"[strategies]\nenabled = {enabled}\n{extra}")
    return cli.build(config.load(path))


def run(orch, cycles):
    async def go():
        await orch.run(cycles=cycles, interval=0)
    asyncio.run(go())
    return orch


def trades(db):
    return [(p["id"], p["strategy"], round(p["realized_pnl"], 6)) for p in db.closed_positions()]


def test_same_seed_same_trades(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = run(make(tmp_path / "a"), 1500)
    b = run(make(tmp_path / "b"), 1500)
    assert trades(a.db) and trades(a.db) == trades(b.db)
    assert a.book.equity() == b.book.equity()


def test_every_step_is_recorded(tmp_path):
    orch = run(make(tmp_path), 1500)
    counts = orch.db.counts()
    assert counts["cycles"] == 1500
    assert counts["proposals"] > 0 and counts["verdicts"] >= counts["proposals"]
    assert counts["orders"] > 0 and counts["fills"] > 0
    last = orch.db.cycle()
    assert last["n"] == 1500 and set(last["states"]) == {"BTC/USDT", "ETH/USDT", "SOL/USDT"}
    states = {s for n in range(1, 1501, 7) for s in orch.db.cycle(n)["states"].values()}
    assert {"trending", "ranging", "volatile"} <= states
    records = orch.db.cycles()
    assert [schemas.problem("CycleRecord", r) for r in records] == [None] * 1500


def test_raising_strategy_does_not_stop_the_others(tmp_path, monkeypatch):
    boom = types.ModuleType("vigil.boom")
    boom.PARAMS = {}

    def propose(ctx):
        raise RuntimeError("kaboom")
    boom.propose = propose
    monkeypatch.setitem(sys.modules, "vigil.boom", boom)
    orch = run(make(tmp_path, enabled="boom, momentum, mean_reversion"), 400)
    rec = orch.db.cycle()
    assert rec["strategies"]["boom"] == "error: RuntimeError: kaboom"
    assert "momentum" in rec["strategies"] and "mean_reversion" in rec["strategies"]
    assert orch.db.counts()["proposals"] > 0


def test_a_failure_and_its_recovery_are_alerted_once_each(tmp_path, monkeypatch):
    flaky = types.ModuleType("vigil.flaky")
    flaky.PARAMS = {}

    def propose(ctx):
        if 5 <= ctx["cycle"] < 10:
            raise RuntimeError("kaboom")
        return {"strategy": ctx["name"], "reason": "fine"}
    flaky.propose = propose
    monkeypatch.setitem(sys.modules, "vigil.flaky", flaky)
    orch = make(tmp_path, enabled="flaky, momentum")
    feeds = orch.source.feeds

    async def flaky_feeds(now):
        out = await feeds(now)
        if 7 <= orch.cycle_n + 1 < 12:
            out["fear_greed"] = schemas.feed(error="HTTP 503")
        return out
    orch.source.feeds = flaky_feeds
    run(orch, 20)
    alerts = orch.db.alerts("error", "feed")
    assert alerts == ["strategy flaky failed: RuntimeError: kaboom", "feed fear_greed down: HTTP 503",
                                    "strategy flaky works again", "feed fear_greed back"]


def test_kill_between_risk_and_execute_sends_nothing_and_persists(tmp_path, monkeypatch):
    orch = make(tmp_path)
    sent = []
    place = orch.executor.broker.place

    async def spy(order):
        sent.append(order["id"])
        return await place(order)
    orch.executor.broker.place = spy
    evaluate = risk.evaluate

    def evaluate_then_kill(proposals, state, params):
        out = evaluate(proposals, state, params)
        if any(t for _, t in out):
            orch.control.kill("test")  # the operator's /kill lands while risk has just approved
        return out
    monkeypatch.setattr(risk, "evaluate", evaluate_then_kill)
    run(orch, 1500)
    assert orch.control.is_halted() and sent == []
    notes = [n for i in range(1, 1501) for n in orch.db.cycle(i)["notes"]]
    assert "halted before execute" in notes
    orch.db.close()
    again = make(tmp_path)
    assert again.control.is_halted()  # a restart stays halted until resume


def test_overrun_skips_ahead_and_says_so(tmp_path):
    orch = make(tmp_path)
    tick = orch.source.tick
    calls = []

    async def slow_tick():
        calls.append(1)
        if len(calls) == 2:
            await asyncio.sleep(0.35)  # one cycle takes 3.5 intervals
        return await tick()
    orch.source.tick = slow_tick
    asyncio.run(orch.run(cycles=3, interval=0.1))
    kinds = orch.db.alerts("overrun")
    assert len(kinds) == 1 and "skipped 3 beat(s)" in kinds[0]


def test_sigterm_finishes_the_cycle_and_exits_0(tmp_path):
    cfg = tmp_path / "v.cfg"
    cfg.write_text(f"[vigil]\ndb = {tmp_path}/v.db\n")
    proc = subprocess.Popen([sys.executable, "run.py", "--config", str(cfg)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # the first cycle line: the loop now waits for the next beat
    assert first.startswith("#1 ")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    db = Storage(str(tmp_path / "v.db"))
    assert db.last_cycle() == db.counts()["cycles"] == 1


def test_cli_run_and_report_json(tmp_path):
    cfg = tmp_path / "v.cfg"
    cfg.write_text(f"[vigil]\ndb = {tmp_path}/v.db\n")
    out = subprocess.run([sys.executable, "run.py", "--config", str(cfg), "--cycles", "300", "--interval", "0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.strip().splitlines()) == 300
    rep = subprocess.run([sys.executable, "run.py", "--config", str(cfg), "report", "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    data = json.loads(rep.stdout)
    assert data["cycles"] == 300 and "strategies" in data and data["definitions"]
    # A reader that leaves early (`report | head`) ends the command quietly, without a traceback.
    gone = subprocess.Popen([sys.executable, "run.py", "--config", str(cfg), "report"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    gone.stdout.close()
    assert gone.wait(timeout=60) == 1 and gone.stderr.read() == b""
    gone.stderr.close()


def test_a_crash_between_write_ahead_and_send_is_resolved_on_restart(tmp_path):
    """The order row was committed, then the process died: the restart asks, then sends it exactly once."""
    every = "funding_arb, smart_money, momentum, mean_reversion, sentiment_veto"
    orch = make(tmp_path, enabled=every)
    run(orch, 1)  # cycle 1 opens the funding spread: two orders
    first = orch.db.orders()
    assert [o["status"] for o in first] == ["filled", "filled"]
    orch.db.close()
    (tmp_path / "a").mkdir()
    crashed = make(tmp_path / "a", enabled=every)
    # what the write-ahead left: the first order pending and its position opening with nothing booked
    orch_position = Storage(str(tmp_path / "v.db")).position(first[0]["position_id"])
    crashed.db.save_order(dict(first[0], status="pending", filled=0.0, avg_price=None, fee=0.0))
    crashed.db.save_position(dict(orch_position, status="opening", fees=0.0, realized_pnl=0.0,
                                  legs=[dict(leg, qty=0.0, opened_qty=0.0) for leg in orch_position["legs"]]))
    run(crashed, 1)  # the restart replays cycle 1
    orders = crashed.db.orders()
    assert [o["id"] for o in orders] == [o["id"] for o in first]  # the same ids, nothing doubled
    assert [o["status"] for o in orders] == ["filled", "filled"]
    assert len(crashed.db.fills()) == 2 and len(crashed.db.positions("open")) == 1
    [held] = crashed.db.positions("open")
    assert [leg["qty"] for leg in held["legs"]] == [f["qty"] for f in crashed.db.fills()]


def test_a_paused_strategy_stops_entering_but_still_exits(tmp_path):
    orch = make(tmp_path, enabled="funding_arb")
    run(orch, 800)
    orch.control.set_paused("funding_arb", True)
    paused_at = orch.last["started_at"]
    held = set(orch.book.positions)
    run(orch, 3000)
    after = [p for p in orch.db.positions() if p["opened_at"] > paused_at]
    closed = [p for p in orch.db.positions("closed") if p["closed_at"] > paused_at and p["id"] in held]
    assert held and not after and closed  # nothing opened while paused; what it held was still managed
    assert "paused" in orch.last["strategies"]["funding_arb"]


def test_a_cycle_that_raises_is_recorded_and_alerted_and_repeated_failures_halt(tmp_path, monkeypatch, caplog):
    from vigil import decide as decide_module
    orch = make(tmp_path)
    real = decide_module.decide
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] in (5, 10, 11, 12):
            raise ZeroDivisionError("float division by zero")
        return real(*args, **kwargs)
    import vigil.orchestrator
    monkeypatch.setattr(vigil.orchestrator, "decide", flaky)
    run(orch, 8)  # one failure: recorded, alerted, the loop goes on
    assert orch.cycle_n == 8 and not orch.control.is_halted()
    assert "cycle 5 failed in" in " ".join(orch.db.cycle(5)["notes"]) and "ZeroDivisionError" in caplog.text
    alerts = orch.db.alerts("error")
    assert any("cycle 5 failed" in a and "float division by zero" in a for a in alerts)
    run(orch, 6)  # three in a row: trading halts, saying why; the loop still runs
    assert orch.cycle_n == 14 and orch.control.is_halted() and "3 cycles in a row failed" in orch.control.halt["reason"]


def test_stopped_entries_let_exits_go_on_and_survive_a_restart(tmp_path):
    orch = make(tmp_path, enabled="funding_arb, momentum, mean_reversion")
    run(orch, 800)
    orch.control.stop_entries(True)
    stopped_at, held = orch.last["started_at"], set(orch.book.positions)
    orch.db.close()
    again = make(tmp_path, enabled="funding_arb, momentum, mean_reversion")  # a restart
    for _ in range(again.cycle_n):  # the sim's market continues where it was, as run.py does
        asyncio.run(again.source.tick())
    run(again, 2500)
    assert again.control.entries_stopped and held
    assert not [p for p in again.db.positions() if p["opened_at"] > stopped_at]  # nothing opened
    assert [p for p in again.db.positions("closed") if p["closed_at"] > stopped_at and p["id"] in held]
    again.control.stop_entries(False)
    run(again, 1500)
    assert [p for p in again.db.positions() if p["opened_at"] > stopped_at]  # entries again


def test_a_nan_or_inf_from_a_source_idles_what_it_touches_and_never_reaches_a_number(tmp_path):
    import math
    orch = make(tmp_path, enabled="funding_arb, momentum, mean_reversion")
    run(orch, 400)
    real_candles, real_feeds = orch.source.candles, orch.source.feeds

    def candles():
        out = real_candles()
        data = {v: dict(by) for v, by in out["data"].items()}
        data["binance"]["BTC/USDT"] = data["binance"]["BTC/USDT"].copy()
        data["binance"]["BTC/USDT"][-1, 4] = float("nan")  # the newest close
        return dict(out, data=data)

    async def feeds(now):
        out = await real_feeds(now)
        out["funding"]["data"]["ETH/USDT"]["bybit"]["rate"] = float("inf")
        return out
    orch.source.candles, orch.source.feeds = candles, feeds
    rec = asyncio.run(orch.cycle())
    assert any("BTC/USDT" in note and "not a usable number" in note for note in rec["notes"])
    assert "not a finite number at ETH/USDT.bybit.rate" in rec["feeds"]["funding"]
    assert rec["states"]["BTC/USDT"] == "unknown" and math.isfinite(rec["equity"])
    orch.source.candles, orch.source.feeds = real_candles, real_feeds
    run(orch, 400)  # once the bad bar has left the window the symbol trades again
    assert math.isfinite(orch.book.equity()) and orch.last["states"]["BTC/USDT"] != "unknown"


def test_a_restarted_process_finds_a_bad_bar_already_inside_the_window(tmp_path):
    orch = run(make(tmp_path), 400)
    window = orch.source.candles()
    data = {v: dict(by) for v, by in window["data"].items()}
    c = data["binance"]["BTC/USDT"] = data["binance"]["BTC/USDT"].copy()
    c[len(c) // 2, schemas.HIGH] = float("inf")  # arrived while the process that has since restarted ran
    orch.db.close()
    again = make(tmp_path)
    again.source.candles = lambda: dict(window, data=data)
    rec = asyncio.run(again.cycle())
    assert any(note.startswith("binance BTC/USDT: the bar of") for note in rec["notes"])
    assert rec["states"]["BTC/USDT"] == "unknown" and rec["states"]["ETH/USDT"] != "unknown"


def test_the_cycle_notes_say_when_a_venue_stop_was_placed_and_when_it_fired(tmp_path):
    orch = run(make(tmp_path), 1500)
    notes = " | ".join(n for i in range(1, 1501) for n in orch.db.cycle(i)["notes"])
    stopped = [p for p in orch.db.positions("closed") if p["close_reason"] == "stop"]
    assert len(stopped) >= 3
    for p in orch.db.positions():
        if p["status"] != "void" and p["stop"] is not None:
            assert f"{p['id']}: stop at {p['stop']:g} for" in notes
    for p in stopped:
        assert f"{p['id']}: its stop at {p['stop']:g} fired at the venue" in notes


def test_a_wall_clock_source_cycles_just_after_each_candle_close_and_records_its_latency(tmp_path):
    """Paper and live: after the first cycle, each starts settle_s after a close of the interval on the wall
    clock, and the record says how long after the latest candle's close the decision came."""
    import numpy as np
    orch = make(tmp_path)
    orch.cfg["vigil"]["settle_s"] = 0.3
    real_candles, started = orch.source.candles, []

    async def tick():
        started.append(time.time())
        return int(started[-1] * 1000)

    def candles():  # the sim's candles, moved so that the latest one closed at the last minute boundary
        feed = real_candles()
        last = int(time.time() * 1000) // 60_000 * 60_000 - 60_000
        data = {v: {s: np.column_stack([last - 60_000 * np.arange(len(c))[::-1], c[:, 1:]]) for s, c in by.items()}
                for v, by in feed["data"].items()}
        return dict(feed, data=data)
    orch.source.tick, orch.source.candles, orch.source.wall_clock = tick, candles, True
    # cycle 1 at once, then 0.3 s after each close of the 1 s heartbeat (the loop may wake late, never early)
    asyncio.run(orch.run(cycles=5, interval=1.0))
    for t in started[1:]:
        assert 0.3 <= t % 1.0 < 0.55, started
    rec = orch.db.cycle()
    close = int(started[-1] * 1000) // 60_000 * 60_000
    assert 0 <= rec["latency_ms"]["decision"] - (started[-1] * 1000 - close) < 1000


def test_an_exit_the_operator_sent_between_cycles_is_followed_by_the_next_cycle(tmp_path):
    orch = run(make(tmp_path), 1500)
    assert orch.book.positions
    broker, late = orch.executor.broker, []
    place = broker.place

    async def answered_new(order):  # the venue takes the exit and fills it later, when next asked
        late.append(order["id"])
        return dict(order, status="open"), []

    async def resolve(order):
        return await place(order)
    broker.place, broker.resolve = answered_new, resolve
    closed, left = asyncio.run(orch.flatten())
    assert late and closed == 0 and left == len(orch.book.positions)  # every exit working
    broker.place = place
    asyncio.run(orch.cycle())
    assert not orch.book.positions and {p["close_reason"] for p in orch.db.positions("closed")} >= {"flatten"}


def test_a_restart_that_does_not_replay_unwinds_a_spread_a_crash_left_with_one_leg(tmp_path):
    """Paper: the crash came after the first leg filled and before the second was written; nothing replays
    that cycle, so the restart settles the spread and unwinds the leg it holds."""
    from helpers import spread
    orch = run(make(tmp_path, enabled="funding_arb"), 3)
    legs = [dict(leg, qty=0.01, price=100.0, notional=1.0) for leg in spread(cycle=4)["legs"]]
    trade = {"proposal": spread(cycle=4), "legs": legs, "checks": []}
    place, sent = orch.executor.broker.place, []

    async def crash_after_one(order):
        if sent:
            raise KeyboardInterrupt  # the process dies here
        sent.append(order["id"])
        return await place(order)
    orch.executor.broker.place = crash_after_one
    try:
        asyncio.run(orch.executor.open(trade, 4, orch.last["started_at"]))
    except KeyboardInterrupt:
        pass
    [held] = orch.db.positions("opening")
    assert [leg["qty"] > 0 for leg in held["legs"]] == [True, False]
    orch.db.close()
    again = make(tmp_path, enabled="funding_arb")
    again.restore(replays_exactly=False)
    run(again, 1)
    [settled] = [p for p in again.db.positions() if p["id"] == held["id"]]
    assert settled["status"] == "closed" and settled["close_reason"] == "leg failed"
