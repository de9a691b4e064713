import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fake_venue import MIN, FakeVenues
from vigil import backtest, candle_files, config, venues
from vigil.storage import Storage

ROOT = Path(__file__).resolve().parent.parent
DAY, HOUR = 86_400_000, 3_600_000
START = 1735689600000  # 2025-01-01


def candles(start, n, price, hole=None):
    """n 1-minute candles from start with a volume no order here outgrows; hole: (first, last) indexes missing."""
    rows = [[start + i * MIN, price + i % 7 * 0.1, price + 1, price - 1, price + (i + 1) % 7 * 0.1, 1000.0]
            for i in range(n)]
    return [r for i, r in enumerate(rows) if not (hole and hole[0] <= i < hole[1])]


def seed(fake, venue, n, price=100.0, hole=None, rates=()):
    """A venue's BTC history: candles with a hole, mark-price candles 0.5 above them, funding settlements."""
    fake.candles[(venue, "BTC")] = candles(START, n, price, hole)
    fake.marks[(venue, "BTC")] = [[r[0], *(x + 0.5 for x in r[1:5])] for r in candles(START, n, price)]
    fake.funding_history[(venue, "BTC")] = [list(r) for r in rates]


def download(url, out, *args):
    return subprocess.run([sys.executable, "run.py", "download", "--symbols", "BTC/USDT", "--from", "2025-01-01",
                           "--out", str(out), "--url", url, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def asked(fake, path):
    return [q for p, q in fake.requests if p == path]


def test_spot_download_paginates_resumes_and_backtest_reads_it(tmp_path):
    with FakeVenues(nodelay=True) as fake:
        fake.candles[("binance_spot", "BTC")] = candles(START, 3 * 1440, 100.0, hole=(1500, 1560))
        first = download(fake.url, tmp_path / "data", "--market", "spot", "--to", "2025-01-02")
        assert first.returncode == 0, first.stderr
        pages = asked(fake, "/api/v3/klines")
        assert len(pages) >= 2  # 1440 candles need two pages of 1000
        again = download(fake.url, tmp_path / "data", "--market", "spot", "--to", "2025-01-03")
        assert again.returncode == 0, again.stderr
        assert int(asked(fake, "/api/v3/klines")[len(pages)]["startTime"]) == START + DAY  # after the last row
    data = candle_files.load(tmp_path / "data" / "binance-spot")["BTC/USDT"]
    assert len(data) == 2 * 1440 - 60 and data[0, 0] == START and data[-1, 0] == START + 2 * DAY - MIN
    assert candle_files.gaps(data, MIN) == [(START + 1500 * MIN, 60)]
    assert "1 gaps in the venue's data (60 bars" in again.stdout
    assert candle_files.venue_of(tmp_path / "data" / "binance-spot") == "binance_spot"


def test_swap_download_writes_candles_funding_and_mark_per_exchange_and_says_what_it_lacks(tmp_path):
    """Through run.py: USD-M candles in pages of 1,000, funding settlements and mark-price candles in
    OUT/binance-swap; a symbol the venue does not list is named on stderr and fails the run (exit 1)."""
    rates = [(START + k * 8 * HOUR, 0.0001 * (k + 1)) for k in range(9) if k != 4]  # one settlement missing
    with FakeVenues(nodelay=True) as fake:
        seed(fake, "binance", 3 * 1440, hole=(1500, 1560), rates=rates)
        first = download(fake.url, tmp_path / "data", "--exchange", "binance", "--to", "2025-01-02")
        assert first.returncode == 0, first.stderr
        assert len(asked(fake, "/fapi/v1/klines")) == 2 and len(asked(fake, "/fapi/v1/markPriceKlines")) == 2
        assert [(q["startTime"], q["endTime"]) for q in asked(fake, "/fapi/v1/fundingRate")] == [
            (str(START), str(START + DAY - 1)), (str(START + 16 * HOUR + 1), str(START + DAY - 1))]  # up to the end
        n = len(fake.requests)
        again = download(fake.url, tmp_path / "data", "--exchange", "binance", "--to", "2025-01-04",
                         "--symbols", "SOL/USDT", "BTC/USDT")  # BTC still comes after SOL failed
        assert again.returncode == 1 and "binanceusdm lists no market SOL/USDT: nothing downloaded" in again.stderr
        resumed = [(p, q) for p, q in fake.requests[n:] if "symbol" in q]
        assert {p: int(q.get("startTime")) for p, q in reversed(resumed)} == {  # each file after its last row
            "/fapi/v1/klines": START + DAY, "/fapi/v1/markPriceKlines": START + DAY,
            "/fapi/v1/fundingRate": START + 2 * 8 * HOUR + 1}
    folder = tmp_path / "data" / "binance-swap"
    assert sorted(p.name for p in folder.iterdir()) == ["BTCUSDT-1m.csv", "BTCUSDT-funding.csv", "BTCUSDT-mark-1m.csv"]
    got = candle_files.read_file(folder / "BTCUSDT-1m.csv")
    assert got[:, :6].tolist() == fake.candles[("binance", "BTC")]  # every row once, the hole left a hole
    mark = candle_files.read_file(folder / "BTCUSDT-mark-1m.csv")
    assert mark[:, :5].tolist() == fake.marks[("binance", "BTC")] and not mark[:, 5].any()
    assert [(ts, rate) for ts, rate, _ in candle_files.read_funding(folder / "BTCUSDT-funding.csv")] == rates
    assert candle_files.load(folder).keys() == {"BTC/USDT"}  # the funding and mark files are no candles


PAGES = {"binanceusdm": (100, 3), "bybit": (100, 3), "okx": (100, 3)}


@pytest.mark.parametrize("venue, candle_path, mark_path, funding_path", [
    ("binance", "/fapi/v1/klines", "/fapi/v1/markPriceKlines", "/fapi/v1/fundingRate"),
    ("bybit", "/v5/market/kline", "/v5/market/mark-price-kline", "/v5/market/funding/history"),
    ("okx", "/api/v5/market/history-candles", "/api/v5/market/history-mark-price-candles",
     "/api/v5/public/funding-rate-history"),
])
def test_each_venue_is_paged_window_by_window_and_resumes_without_a_duplicate(
        tmp_path, monkeypatch, venue, candle_path, mark_path, funding_path):
    """Pages as small as the fake venue's: Bybit and OKX answer a window newest first, so a window asked wider
    than a page would lose its older rows. Every row arrives once, holes stay holes, a second run appends."""
    monkeypatch.setattr(venues, "PAGES", PAGES)
    rates = [(START + h * HOUR, 0.0001 * h) for h in range(12) if h != 5]  # hourly, one missing
    with FakeVenues(nodelay=True) as fake:
        fake.pages[venue] = PAGES[{"binance": "binanceusdm"}.get(venue, venue)]
        seed(fake, venue, 720, price=50.0, hole=(250, 330), rates=rates)
        ex = candle_files.client(venue, "swap", fake.url)
        out = tmp_path / candle_files.folder(venue, "swap")
        out.mkdir()
        first = candle_files.download(ex, "BTC/USDT", "1m", START, START + 400 * MIN, out, log=lambda line: None)
        assert len(asked(fake, candle_path)) >= 3 and len(asked(fake, mark_path)) >= 3
        assert len(asked(fake, funding_path)) >= 3
        assert list(first.values()) == [320, 6, 400]  # candles (80 missing), settlements in 400 min, marks
        second = candle_files.download(ex, "BTC/USDT", "1m", START, START + 720 * MIN, out, log=lambda line: None)
        assert list(second.values()) == [320, 5, 320]
        assert candle_files.read_file(out / "BTCUSDT-1m.csv")[:, :6].tolist() == fake.candles[(venue, "BTC")]
        assert candle_files.read_file(out / "BTCUSDT-mark-1m.csv")[:, :5].tolist() == fake.marks[(venue, "BTC")]
        assert [(ts, r) for ts, r, _ in candle_files.read_funding(out / "BTCUSDT-funding.csv")] == rates
        assert candle_files.venue_of(out) == venue


def test_only_closed_candles_and_published_settlements_are_written(tmp_path):
    """The venue serves the hour still open and a settlement still to come: neither is history yet."""
    before = time.time() * 1000
    hour = int(before) // HOUR * HOUR  # the hour open now
    rows = [[hour + k * HOUR, 100, 101, 99, 100.5, 1000.0] for k in range(-30, 2)]
    with FakeVenues(nodelay=True) as fake:
        fake.candles[("bybit", "BTC")] = rows
        fake.funding_history[("bybit", "BTC")] = [[hour - 8 * HOUR, 0.0001], [hour + 8 * HOUR, 0.0002]]
        out = tmp_path / "bybit-swap"
        out.mkdir()
        candle_files.download(candle_files.client("bybit", "swap", fake.url), "BTC/USDT", "1h", hour - 30 * HOUR,
                              2**62, out, log=lambda line: None)
    after = time.time() * 1000
    last = candle_files.read_file(out / "BTCUSDT-1h.csv")[-1, 0]
    assert int(before) // HOUR * HOUR - HOUR <= last <= int(after) // HOUR * HOUR - HOUR  # the last closed one
    assert [ts for ts, _, _ in candle_files.read_funding(out / "BTCUSDT-funding.csv")] == [hour - 8 * HOUR]


def funding_cfg(tmp_path, venues="binance, bybit"):
    path = tmp_path / f"{venues.replace(', ', '-')}.cfg"
    path.write_text(f"[vigil]\ndb = {tmp_path}/unused.db\nconsole = false\n[strategies]\nenabled = funding_arb\n"
                    f"[market]\nsymbols = BTC/USDT\nvenues = {venues}\nhistory = 62\n")
    return path


T = START + 16 * HOUR  # the settlement that pays 1%


def downloaded_pair(tmp_path):
    """binance-swap and bybit-swap folders downloaded from the fake venues: a day of candles, bybit 20% dearer,
    funding every 8 hours, bybit's far above binance's, and at T a single large one."""
    with FakeVenues(nodelay=True) as fake:
        seed(fake, "binance", 1440, 100.0, rates=[(START + k * 8 * HOUR, 0.0001) for k in range(3)])
        seed(fake, "bybit", 1440, 120.0, rates=[(START, 0.001), (START + 8 * HOUR, 0.001), (T, 0.01)])
        for venue in ("binance", "bybit"):
            got = download(fake.url, tmp_path / "data", "--exchange", venue, "--to", "2025-01-02")
            assert got.returncode == 0, got.stderr
    return [tmp_path / "data" / "binance-swap", tmp_path / "data" / "bybit-swap"]


def test_a_two_venue_funding_backtest_fills_each_leg_on_its_venue_and_books_a_settlement_at_its_time(tmp_path):
    folders = downloaded_pair(tmp_path)
    cfg = config.load(funding_cfg(tmp_path))
    data, rates = backtest.load(cfg, folders)
    assert sorted(data) == ["binance", "bybit"] and sorted(rates["BTC/USDT"]) == ["binance", "bybit"]

    def spread(last_now):
        """The funding-arb position of a backtest whose last cycle's now (its bar's close) is last_now."""
        cut = {v: {s: c[c[:, 0] + MIN <= last_now] for s, c in by.items()} for v, by in data.items()}
        db = str(tmp_path / f"{last_now}.db")
        backtest.run(cfg, cut, rates, db, progress=None)
        [p] = Storage(db).positions()
        return p, {leg["venue"]: leg for leg in p["legs"]}

    before, legs_before = spread(T - MIN)
    at, legs_at = spread(T)
    assert at["strategy"] == "funding_arb" and at["status"] == "open"
    assert legs_at["bybit"]["side"] == "sell" and legs_at["binance"]["side"] == "buy"  # short where funding pays
    # each leg filled at its own venue's bar: bybit trades 20% above binance
    assert 99 < legs_at["binance"]["entry"] < 102 and 119 < legs_at["bybit"]["entry"] < 122
    qty = legs_at["bybit"]["qty"]
    assert qty > 0 and legs_at["binance"]["qty"] == qty

    def close(venue, now):
        """The close of the venue's bar that a cycle at now marks to."""
        c = data[venue]["BTC/USDT"]
        return c[c[:, 0] + MIN == now, 4][0]

    # up to a minute before T: only the 8:00 settlement (the position opened after the one at 0:00)
    assert legs_before["bybit"]["funding"] == pytest.approx(qty * close("bybit", START + 8 * HOUR) * 0.001)
    assert legs_before["binance"]["funding"] == pytest.approx(-qty * close("binance", START + 8 * HOUR) * 0.0001)
    # the cycle whose now reaches T books T's settlement, the 1% one, and nothing else
    assert legs_at["bybit"]["funding"] - legs_before["bybit"]["funding"] == pytest.approx(
        qty * close("bybit", T) * 0.01)
    assert legs_at["binance"]["funding"] - legs_before["binance"]["funding"] == pytest.approx(
        -qty * close("binance", T) * 0.0001)
    assert at["funding"] == pytest.approx(legs_at["bybit"]["funding"] + legs_at["binance"]["funding"])


def test_backtest_and_sweep_take_one_folder_per_venue_and_refuse_data_the_config_disagrees_with(tmp_path):
    folders = downloaded_pair(tmp_path)
    cfg = funding_cfg(tmp_path)
    run = lambda *args, config=cfg: subprocess.run(  # noqa: E731
        [sys.executable, "run.py", "--config", str(config), *args], cwd=ROOT, capture_output=True, text=True,
        timeout=300)
    out = run("backtest", "--data", str(folders[0]), "--data", str(folders[1]), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)["backtest"]
    assert report["candles"] == {"binance": {"BTC/USDT": 1440}, "bybit": {"BTC/USDT": 1440}}
    assert report["funding_history"] == {"BTC/USDT": ["binance", "bybit"]}
    assert json.loads(out.stdout)["open_positions"] == 1  # the spread, held to the end
    sweep = run("sweep", "--data", *map(str, folders), "--set", "funding_arb.entry_apr=0.2,0.3", "--jobs", "2",
                "--json")
    assert sweep.returncode == 0, sweep.stderr
    assert json.loads(sweep.stdout)["points"] == 2
    funding = str(folders[1] / "BTCUSDT-funding.csv")
    bad = [(cfg, [folders[1]], "[market] trade_venue: binance has no candles in --data (it holds bybit)"),
           (cfg, [folders[0], folders[0] / "BTCUSDT-1m.csv"], "holds binance candles as"),
           (funding_cfg(tmp_path, "binance"), folders, "bybit is not among [market] venues (binance)"),
           (cfg, [*folders, "--funding", f"bybit:{funding}"], f"--funding bybit:{funding}: bybit BTC/USDT funding "
                                                               "is already in")]
    for config, args, message in bad:
        got = run("backtest", "--data", *map(str, args), config=config)
        assert got.returncode == 2 and got.stderr.count("\n") == 1 and message in got.stderr, got.stderr
