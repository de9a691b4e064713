import asyncio
import csv
import gzip
import importlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from vigil import backtest, candle_files, cli, config
from vigil.sim import SimMarket
from vigil.storage import Storage

ROOT = Path(__file__).resolve().parent.parent
CANDLE_ONLY = "momentum, mean_reversion"
STRATEGIES = ["funding_arb", "smart_money", "momentum", "mean_reversion", "sentiment_veto"]


def cfg_file(tmp_path, db="v.db"):
    path = tmp_path / "v.cfg"
    path.write_text(f"[vigil]\ndb = {tmp_path}/{db}\nconsole = false\n[strategies]\nenabled = {CANDLE_ONLY}\n"
                    "[market]\nsymbols = BTC/USDT, ETH/USDT\n")
    return path


def no_feeds(orch):
    """The sim without its side feeds: the same inputs a backtest of candles alone has."""
    real = orch.source.feeds

    async def feeds(now):
        out = await real(now)
        return {k: dict(v, ok=False, data=None, error="off") for k, v in out.items()}
    orch.source.feeds = feeds


def trades(db):
    return [(p["id"], p["side"], p["close_reason"], round(p["realized_pnl"], 9)) for p in db.closed_positions()]


def sim_dump(tmp_path, cycles=2500):
    """The sim's market of cfg_file's seed, every bar from the first warm-up bar on, as Binance CSVs in tmp_path/data."""
    market = SimMarket(config.load(cfg_file(tmp_path)))
    rows = [("BTC/USDT", *market.buf[0, 0, i]) for i in range(market.rows)]
    rows += [("ETH/USDT", *market.buf[0, 1, i]) for i in range(market.rows)]
    for _ in range(cycles):
        asyncio.run(market.tick())
        rows += [(s, *market.candles()["data"]["binance"][s][-1]) for s in ("BTC/USDT", "ETH/USDT")]
    rows = [(s, int(ts), *map(float, (o, h, l, c, v))) for s, ts, o, h, l, c, v in rows]
    (tmp_path / "data").mkdir()
    with gzip.open(tmp_path / "data" / "BTCUSDT-1m-2025-01.csv.gz", "wt") as f:
        f.write("open_time,open,high,low,close,volume,close_time\n")
        f.writelines(f"{ts},{o!r},{h!r},{l!r},{c!r},{v!r},{ts + 59999}\n" for s, ts, o, h, l, c, v in rows
                     if s == "BTC/USDT")
    with open(tmp_path / "data" / "ETHUSDT-1m-2025-01.csv", "w") as f:
        f.writelines(f"{ts * 1000},{o!r},{h!r},{l!r},{c!r},{v!r}\n" for s, ts, o, h, l, c, v in rows
                     if s == "ETH/USDT")  # microsecond timestamps, no header
    return tmp_path / "data"


def test_backtest_gives_the_sim_loop_trades_on_the_same_candles(tmp_path):
    orch = cli.build(config.load(cfg_file(tmp_path)))
    no_feeds(orch)
    asyncio.run(orch.run(cycles=2500, interval=0))
    sim_trades = trades(orch.db)
    assert len(sim_trades) >= 5
    cfg = config.load(cfg_file(tmp_path, "unused.db"))
    data, rates = backtest.load(cfg, sim_dump(tmp_path))
    out = backtest.run(cfg, data, rates, str(tmp_path / "bt.db"), str(tmp_path / "eq.csv"), progress=None)
    assert trades(Storage(str(tmp_path / "bt.db"))) == sim_trades
    assert out["backtest"]["cycles"] == 2500 and out["strategies"]
    assert out["backtest"]["decided"] < 2500  # bars no strategy could act on passed without decisions
    curve = (tmp_path / "eq.csv").read_text().splitlines()
    assert curve[0] == "time_ms,equity,gross_exposure" and len(curve) == 2501
    last = curve[-1].split(",")
    assert int(last[0]) == out["backtest"]["to"] + 60_000 and float(last[1]) == pytest.approx(out["equity"], abs=1e-6)
    assert any(float(row.split(",")[2]) > 0 for row in curve[1:])  # exposure while positions were open


def test_bars_passed_without_decisions_change_nothing(tmp_path, monkeypatch):
    """The same backtest with every strategy's quiet() and without any: the same trades, equity curve and figures,
    with every bar decided in the second."""
    # every strategy: funding, on-chain and sentiment are quiet for want of their feeds; the rows of one day kept
    path = write(tmp_path / "all.cfg", "[vigil]\nconsole = false\nretention_days = 1\n[risk]\ndaily_loss = 0.002\n"
                                       "[market]\nsymbols = BTC/USDT, ETH/USDT\n")
    cfg = config.load(path)
    assert sorted(cfg["strategies"]["enabled"]) == sorted(STRATEGIES)
    data, rates = backtest.load(cfg, sim_dump(tmp_path, 14_400))
    data["binance"]["ETH/USDT"] = data["binance"]["ETH/USDT"][1000:]  # listed later: its first windows are empty
    runs, days = [], []
    put = Storage.put
    monkeypatch.setattr(Storage, "put", lambda db, key, value: (days.append(value) if key == "day_start" else None,
                                                               put(db, key, value))[1])
    for name in ("quiet", "every bar"):
        out = backtest.run(cfg, data, rates, str(tmp_path / f"{name}.db"), str(tmp_path / f"{name}.csv"), progress=None)
        db = Storage(str(tmp_path / f"{name}.db"))
        runs.append((out, trades(db), (tmp_path / f"{name}.csv").read_text(), db.counts()["cycles"], days[:]))
        days.clear()
        for module in map(importlib.import_module, (f"vigil.{s}" for s in STRATEGIES)):
            monkeypatch.delattr(module, "quiet", raising=False)
    (quiet, quiet_trades, quiet_curve, quiet_rows, quiet_day), (every, every_trades, every_curve, every_rows,
                                                                every_day) = runs
    assert quiet_day == every_day and len(quiet_day) == 11  # each day's loss limit counts from the same equity
    assert quiet["backtest"]["decided"] < 14_400 / 2 and every["backtest"]["decided"] == 14_400
    assert quiet_trades == every_trades and len(quiet_trades) >= 10 and quiet_curve == every_curve
    assert quiet["strategies"] == every["strategies"] and quiet["equity"] == every["equity"]
    assert quiet["backtest"]["exposure"] == every["backtest"]["exposure"]
    assert 0 < quiet_rows <= every_rows <= 24 * 60 + 1  # rows the retention would drop are never written


def write(path, text):
    path.write_text(text)
    return path


GOOD = "1000,10,11,9,10.5,5\n61000,10.5,11,10,10.8,6\n"


@pytest.mark.parametrize("body, needle", [
    (GOOD + "121000,10.8,11,10,abc,6\n", ":3: bad row"),
    (GOOD + "61000,10.8,11,10,10.9,6\n", ":3: duplicate timestamp 61000"),
    (GOOD + "31000,10.8,11,10,10.9,6\n", ":3: timestamps out of order"),
    (GOOD + "121000,10.8,10,11,10.9,6\n", ":3: inconsistent candle"),
    (GOOD + "121000,10.8,11\n", ":3: bad row"),
    (GOOD + "121000,10.8,11,10,nan,6\n", ":3: a value that is not a finite number"),
    (GOOD + "121000,10.8,inf,10,10.9,6\n", ":3: a value that is not a finite number"),
    (GOOD + "121000,10.8,11,10,10.9,NaN\n", ":3: a value that is not a finite number"),
])
def test_malformed_files_name_file_and_line(tmp_path, body, needle):
    path = write(tmp_path / "BTCUSDT-1m.csv", body)
    with pytest.raises(candle_files.CandleFileError) as e:
        candle_files.load(path)
    assert str(e.value).startswith(str(path)) and needle in str(e.value)


def test_header_blank_lines_and_microsecond_timestamps(tmp_path):
    path = write(tmp_path / "BTCUSDT-1m-2025-01.csv", "open_time,open,high,low,close,volume,close_time\n\n"
                 "1735689600000000,10,11,9,10.5,5,1735689659999999\n\n1735689660000000,10.5,11,10,10.8,6,1735689719999999\n")
    assert candle_files.read_file(path).tolist() == [[1735689600000, 10, 11, 9, 10.5, 5],
                                                     [1735689660000, 10.5, 11, 10, 10.8, 6]]
    bad = write(tmp_path / "ETHUSDT-1m-2025-01.csv", "open_time,open,high,low,close,volume\n\n"
                "1735689600000000,10,11,9,10.5,5\n1735689600000000,10.5,11,10,10.8,6\n")
    with pytest.raises(candle_files.CandleFileError, match=":4: duplicate timestamp 1735689600000 after"):
        candle_files.read_file(bad)


def test_zip_json_and_folders(tmp_path):
    with zipfile.ZipFile(tmp_path / "BTCUSDT-1m-2025-01-01.zip", "w") as z:
        z.writestr("BTCUSDT-1m-2025-01-01.csv", GOOD)
    write(tmp_path / "BTCUSDT-1m-2025-01-02.csv", "121000,10.8,11,10,10.9,6\n241000,10.9,11,10,10.7,6\n")
    write(tmp_path / "ETH_USDT-1m.json", json.dumps([[1000, 1, 2, 0.5, 1.5, 3]]))
    data = candle_files.load(tmp_path)
    assert data["BTC/USDT"][:, 0].tolist() == [1000, 61000, 121000, 241000]
    assert candle_files.gaps(data["BTC/USDT"], 60_000) == [(181000, 1)]
    assert data["ETH/USDT"].shape == (1, 6)
    write(tmp_path / "BTCUSDT-1m-2025-01-03.csv", "61000,10.8,11,10,10.9,6\n")
    with pytest.raises(candle_files.CandleFileError, match="overlaps"):
        candle_files.load(tmp_path)


def test_funding_history_is_never_read_ahead(tmp_path):
    from vigil.backtest import BacktestSource
    cfg = config.load(cfg_file(tmp_path))
    candles = np.array([[i * 60_000, 10, 11, 9, 10, 5] for i in range(400)], float)
    rates = {"BTC/USDT": {"bybit": [(0, 0.0001, 8.0), (330 * 60_000, 0.0009, 8.0)]}}
    src = BacktestSource(cfg, {"binance": {"BTC/USDT": candles}}, rates)
    seen = []
    for _ in range(60):
        now = asyncio.run(src.tick())
        seen.append((now, asyncio.run(src.feeds(now))["funding"]["data"]["BTC/USDT"]["bybit"]["rate"]))
    assert all(rate == (0.0009 if now >= 330 * 60_000 else 0.0001) for now, rate in seen)
    assert not asyncio.run(src.feeds(0))["onchain"]["ok"]


def test_backtest_command_reports_gaps_and_bad_files(tmp_path):
    cfg = cfg_file(tmp_path)
    rows = [f"{i * 60_000},{100 + np.sin(i / 7):.4f},{101 + np.sin(i / 7):.4f},{99 + np.sin(i / 7):.4f},"
            f"{100 + np.sin((i + 1) / 7):.4f},{50 + i % 7}" for i in range(600) if not 400 <= i < 410]
    write(tmp_path / "BTCUSDT-1m.csv", "\n".join(rows) + "\n")
    out = subprocess.run([sys.executable, "run.py", "--config", str(cfg), "backtest", "--data",
                          str(tmp_path / "BTCUSDT-1m.csv"), "--json", "--equity-csv", str(tmp_path / "e.csv"),
                          "--plot", str(tmp_path / "e.png")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    from test_bot import decode_png  # the same picture /chart sends, of the equity the csv holds
    img = decode_png((tmp_path / "e.png").read_bytes())
    equity = [float(line.split(",")[1]) for line in (tmp_path / "e.csv").read_text().splitlines()[1:]]
    blue = (img[:, :, 0] == 30) & (img[:, :, 2] == 200)
    assert report["backtest"]["plot"] == str(tmp_path / "e.png") and blue[:, 10:].any(axis=0).all()
    assert (len(set(equity)) > 1) == (np.nonzero(blue)[0].min() == 10)
    assert report["backtest"]["gaps"] == {"binance": {"BTC/USDT": [{"from": 400 * 60_000, "bars": 10}]}}
    assert "backtest [" in out.stderr  # the progress bar
    (tmp_path / "bad").mkdir()
    write(tmp_path / "bad" / "BTCUSDT-1m.csv", "x,y\n1,2\n")
    bad = subprocess.run([sys.executable, "run.py", "--config", str(cfg), "backtest", "--data",
                          str(tmp_path / "bad")], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "BTCUSDT-1m.csv:2: bad row" in bad.stderr


def sim_candles(cfg, cycles):
    """{"binance": {symbol: (n, 6) candles}} of the seeded sim market: its warm-up bars, then one bar per cycle."""
    market = SimMarket(cfg)
    rows = {s: [market.buf[0, k, i].tolist() for i in range(market.rows)] for k, s in enumerate(cfg["market"]["symbols"])}
    for _ in range(cycles):
        asyncio.run(market.tick())
        for s in rows:
            rows[s].append(list(map(float, market.candles()["data"]["binance"][s][-1])))
    return {"binance": {s: np.array(r, float) for s, r in rows.items()}}


def test_every_fill_is_booked_once_when_exits_fill_in_parts(tmp_path):
    """A thin market fills exits in parts over several cycles: each part is booked once, and a closed position's
    exit fills equal its entry fills, leg by leg, as the database holds them."""
    cfg = config.load(cfg_file(tmp_path))
    data = sim_candles(cfg, 4000)
    for candles in data["binance"].values():
        candles[1::2, 5] *= 0.001  # every other bar is thin: what one bar filled, the next fills in parts
    backtest.run(cfg, data, {}, str(tmp_path / "bt.db"), str(tmp_path / "eq.csv"), progress=None)
    db = Storage(str(tmp_path / "bt.db"))
    orders = {o["id"]: o for o in db.orders()}
    filled = {}
    for f in db.fills():
        o = orders[f["order_id"]]
        key = (o["position_id"], o["leg"], o["reduce_only"])
        filled[key] = filled.get(key, 0.0) + f["qty"]
    exits = {}
    for o in orders.values():
        if o["reduce_only"]:
            exits[o["position_id"]] = exits.get(o["position_id"], 0) + 1
    closed = db.positions("closed")
    assert len(closed) >= 5 and sum(exits[p["id"]] > len(p["legs"]) for p in closed) >= 3  # exits in parts
    for p in db.positions():
        for i, leg in enumerate(p["legs"]):
            entered, exited = filled.get((p["id"], i, False), 0.0), filled.get((p["id"], i, True), 0.0)
            assert leg["opened_qty"] == pytest.approx(entered, rel=1e-12)
            assert leg["qty"] == pytest.approx(entered - exited, rel=1e-9, abs=1e-12)
            if p["status"] == "closed":
                assert exited == pytest.approx(entered, rel=1e-9)


@pytest.mark.parametrize("venue_stops", [True, False])
def test_stops_fire_inside_the_bar_at_the_stop_or_a_gapped_open(tmp_path, venue_stops):
    """A bar after the entry whose low (long) or high (short) crossed the stop exits in that bar, at the stop or
    at the open when the bar gapped through it (less the fill model's slippage), never at a later close; the
    same whether the stop rests at the (simulated) venue or Vigil sends the exit when a bar crosses it."""
    cfg = config.load(cfg_file(tmp_path))
    cfg["risk"]["venue_stops"] = venue_stops
    data = sim_candles(cfg, 3000)
    backtest.run(cfg, data, {}, str(tmp_path / "bt.db"), str(tmp_path / "eq.csv"), progress=None)
    db = Storage(str(tmp_path / "bt.db"))
    bars = {(s, int(r[0])): r for s, c in data["binance"].items() for r in c}
    fired = 0
    for p in db.positions("closed"):
        if p["close_reason"] != "stop":
            continue
        exits = [o for o in db.orders(position_id=p["id"]) if o["reduce_only"] and o["filled"]]
        assert all(o["type"] == "venue_stop" for o in db.orders(position_id=p["id"]) if o["status"] == "cancelled")
        first = db.fills(exits[0]["id"])[0]
        ts, o, h, low, c, v = bars[(p["symbol"], first["ts"])]
        long = p["side"] == "buy"
        if exits[0]["type"] == ("venue_stop" if venue_stops else "stop"):
            fired += 1
            assert (low <= p["stop"]) if long else (h >= p["stop"])  # the bar crossed it
            level = min(o, p["stop"]) if long else max(o, p["stop"])
            assert first["price"] == pytest.approx(level, rel=0.01)
            assert (first["price"] <= level) if long else (first["price"] >= level)  # slippage only against us
        else:  # the entry's own bar closed beyond the stop: the exit is at that close, at market
            assert first["ts"] < p["opened_at"] and ((c <= p["stop"]) if long else (c >= p["stop"]))
    assert fired >= 3


def test_breakdown_and_trade_list_add_up_to_the_report(tmp_path):
    cfg = config.load(cfg_file(tmp_path))
    data = sim_candles(cfg, 3000)
    out = backtest.run(cfg, data, {}, str(tmp_path / "bt.db"), progress=None, breakdown="day",
                       trades_csv=str(tmp_path / "trades.csv"))
    total = out["total"]
    days = out["backtest"]["breakdown"]
    assert len(days) >= 2 and [d["period"] for d in days] == sorted(d["period"] for d in days)
    assert sum(d["total"]["trades"] for d in days) == total["trades"]
    assert sum(d["total"]["pnl"] for d in days) == pytest.approx(total["net_pnl"])
    for name, f in out["strategies"].items():
        assert sum(d["strategies"].get(name, {}).get("pnl", 0.0) for d in days) == pytest.approx(f["net_pnl"])
    with open(tmp_path / "trades.csv") as f:
        rows = list(csv.DictReader(f))
    db = Storage(str(tmp_path / "bt.db"))
    assert len(rows) == len(db.positions())
    closed = [r for r in rows if r["status"] == "closed"]
    assert len(closed) == total["trades"] and sum(float(r["pnl"]) for r in closed) == pytest.approx(total["net_pnl"])
    for r in closed:  # the exit price is where the position's realized price PnL says it was
        p = db.position(r["id"])
        leg, sign = p["legs"][0], 1 if p["side"] == "buy" else -1
        if p["kind"] == "directional" and not p["funding"]:
            gross = (float(r["exit"]) - leg["entry"]) * leg["opened_qty"] * sign
            assert gross - p["fees"] == pytest.approx(p["realized_pnl"], rel=1e-6, abs=1e-6)
    text = backtest.text(out)
    assert "period" in text and days[-1]["period"] in text


def test_sweep_ranks_on_the_train_period_and_shows_the_test_period_beside_it(tmp_path):
    cfg_path = cfg_file(tmp_path)
    cfg = config.load(cfg_path)
    data = sim_candles(cfg, 2400)
    folder = tmp_path / "data"
    folder.mkdir()
    for s, c in data["binance"].items():
        np.savetxt(folder / f"{s.replace('/', '')}-1m.csv", c, delimiter=",", fmt="%.17g")
    args = [sys.executable, "run.py", "--config", str(cfg_path), "sweep", "--data", str(folder),
            "--set", "momentum.range_bars=20,30", "--set", "risk.risk_per_trade=0.003,0.005", "--jobs", "2"]
    out = subprocess.run(args + ["--json"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    rows = result["rows"]
    assert result["points"] == len(rows) == 4
    assert {tuple(sorted(r["set"].items())) for r in rows} == {
        (("momentum.range_bars", a), ("risk.risk_per_trade", b)) for a in (20, 30) for b in (0.003, 0.005)}
    train = [r["train"]["net_pnl"] for r in rows]
    assert train == sorted(train, reverse=True)
    # the best point's figures are a plain backtest of it, on each side of the split
    best, split = rows[0], result["split"]
    point = dict(cfg, momentum=dict(cfg["momentum"], range_bars=best["set"]["momentum.range_bars"]),
                 risk=dict(cfg["risk"], risk_per_trade=best["set"]["risk.risk_per_trade"]))
    for side, keep in (("train", lambda c: c[c[:, 0] < split]), ("test", lambda c: c[c[:, 0] >= split])):
        alone = backtest.run(point, {"binance": {s: keep(c) for s, c in data["binance"].items()}}, {}, progress=None)
        assert best[side]["net_pnl"] == pytest.approx(alone["total"]["net_pnl"] if alone["total"] else None)
    text = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300).stdout
    assert text.startswith("4 points tried; ranked by net_pnl on the train period")
    bad = subprocess.run(args[:7] + ["--set", "momentum.range_bras=20"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "momentum.range_bras" in bad.stderr
    bad = subprocess.run(args[:7] + ["--set", "risk.risk_per_trade=0.5"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "[risk] risk_per_trade: 0.5 is outside" in bad.stderr
