import asyncio
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fake_venue import MIN, FakeVenues
from helpers import until
from vigil import cli, config
from vigil.paper_source import PaperSource

ROOT = Path(__file__).resolve().parent.parent
EXCHANGE = "0x00000000000000000000000000000000000000ee"
WHALE = "0x00000000000000000000000000000000000000aa"


def setup(fake, tmp_path, monkeypatch, extra=""):
    """The fake exchange's history ends 10 minutes ago: its 'open' bar there has closed by the wall clock."""
    now = int(time.time() * 1000) // MIN * MIN - 10 * MIN
    for venue in ("binance", "bybit", "okx"):
        for base in ("BTC", "ETH"):
            fake.funding[(venue, base)] = (0.0001 if venue != "bybit" else 0.0006, now + 3_600_000, 8.0)
            if venue != "okx":
                fake.seed(venue, base, now - 400 * MIN, 400, price=100.0 if base == "BTC" else 50.0)
    monkeypatch.setenv("ETHERSCAN_API_KEY", "KEY123")
    venues = "".join(f"[venue.{v}]\nrest_url = {fake.url}\nws_url = {fake.ws}\n"
                     for v in ("binance", "binance_spot", "bybit", "okx"))
    path = tmp_path / "v.cfg"
    path.write_text(f"[vigil]\nmode = paper\ndb = {tmp_path}/v.db\nconsole = false\n"
                    f"[market]\nsymbols = BTC/USDT, ETH/USDT\nstale_after = 5\n{venues}"
                    f"[feeds]\ntimeout = 1\nfear_greed_url = {fake.url}/fng/\netherscan_url = {fake.url}/api\n"
                    f"wallets = {EXCHANGE}:binance-hot, {WHALE}:whale\n{extra}")
    return config.load(path), now


def stream(source, venue, symbol):
    return next(s for s in source.streams if s.venue == venue and s.symbol == symbol)


def test_candles_backfill_stream_and_survive_a_disconnect_with_a_gap(tmp_path, monkeypatch):
    with FakeVenues() as fake:
        cfg, now = setup(fake, tmp_path, monkeypatch)
        source = PaperSource(cfg)

        async def go():
            await source.start()
            try:
                s = stream(source, "binance", "BTC/USDT")
                await until(lambda: len(s.candles()) and fake.subscribed("binance", "btcusdt@kline_1m"))
                assert s.candles()[-1, 0] == now - MIN  # the fake has nothing newer yet
                # the open bar updates, then the next bar opens: the first one is closed
                fake.push_kline("binance", "BTC", [now, 1, 2, 0.5, 1.5, 3], False)
                fake.push_kline("binance", "BTC", [now, 1, 2.5, 0.5, 2, 4], False)
                fake.push_kline("binance", "BTC", [now + MIN, 2, 3, 1, 2.5, 5], False)
                await until(lambda: s.candles()[-1, 0] == now)
                assert s.candles()[-1].tolist() == [now, 1, 2.5, 0.5, 2, 4]
                # the stream drops; meanwhile three bars close that only REST knows about
                fake.candles[("binance", "BTC")] += [[now + k * MIN, 2, 3, 1, 2.5, 5] for k in (1, 2, 3)]
                fake.drop_connections()
                await until(lambda: s.reconnects >= 1 and fake.subscribed("binance", "btcusdt@kline_1m"), 15)
                fake.push_kline("binance", "BTC", [now + 4 * MIN, 2, 3, 1, 2.5, 5], False)
                fake.push_kline("binance", "BTC", [now + 5 * MIN, 2, 3, 1, 2.5, 5], False)
                await until(lambda: s.candles()[-1, 0] == now + 4 * MIN)
                ts = s.candles()[:, 0]
                assert (np.diff(ts) == MIN).all() and len(set(ts)) == len(ts)  # nothing missing, nothing twice
                assert source.candles()["ok"]
            finally:
                await source.close()
        asyncio.run(go())


def test_streams_subscribe_in_the_batches_each_venue_allows_and_again_after_a_reconnect(tmp_path, monkeypatch):
    """12 symbols on three venues: Binance's klines in one request, its liquidations in another (ccxt gives them
    a connection of their own); Bybit's klines and liquidations 10 topics a request, on one connection; OKX's
    klines all in one. A reconnect sends the same batches, and REST fills what closed meanwhile."""
    bases = [f"C{i:02d}" for i in range(12)]
    with FakeVenues(bases) as fake:
        cfg, now = setup(fake, tmp_path, monkeypatch)
        cfg["market"].update(symbols=[f"{b}/USDT" for b in bases], venues=["binance", "bybit", "okx"])
        for venue in ("binance", "bybit", "okx"):
            for base in bases:
                fake.seed(venue, base, now - 400 * MIN, 400)
        source = PaperSource(cfg)

        async def go():
            await source.start()
            try:
                await until(lambda: all(len(s.candles()) for s in source.streams), 30)
                await until(lambda: fake.subscribe_requests("bybit")[0] == 4)
                assert fake.subscribe_requests("binance") == (2, 2, 24)  # (requests, connections, topics)
                assert fake.subscribe_requests("bybit") == (4, 1, 24)
                assert fake.subscribe_requests("okx") == (1, 1, 12)
                for venue in ("binance", "bybit", "okx"):  # each venue's updates reach its streams
                    fake.push_kline(venue, "C11", [now, 1, 2, 0.5, 1.5, 3], False)
                    fake.push_kline(venue, "C11", [now + MIN, 2, 3, 1, 2.5, 5], False)
                await until(lambda: all(stream(source, v, "C11/USDT").candles()[-1, 0] == now
                                        for v in ("binance", "bybit", "okx")))
                assert (await source.feeds(now))["liquidations"]["ok"]
                fake.candles[("okx", "C00")].append([now, 2, 3, 1, 2.5, 5])  # closes while disconnected
                fake.drop_connections()
                await until(lambda: fake.subscribe_requests("bybit")[0] == 8 and fake.subscribe_requests("okx")[0] == 2
                            and fake.subscribe_requests("binance")[0] == 4, 30)
                assert fake.subscribe_requests("binance") == (4, 4, 48)  # the same batches, on new connections
                assert fake.subscribe_requests("bybit") == (8, 2, 48)
                assert fake.subscribe_requests("okx") == (2, 2, 24)
                assert all(s.reconnects == 1 for s in source.streams)
                fake.push_kline("okx", "C00", [now + MIN, 1, 2, 0.5, 1.5, 3], False)
                fake.push_kline("okx", "C00", [now + 2 * MIN, 2, 3, 1, 2.5, 5], False)
                await until(lambda: stream(source, "okx", "C00/USDT").candles()[-1, 0] == now + MIN, 30)
                ts = stream(source, "okx", "C00/USDT").candles()[:, 0]
                assert ts[-2] == now and (np.diff(ts) == MIN).all()  # the bar only REST knew about is there too
                assert source.candles()["ok"]
            finally:
                await source.close()
        asyncio.run(go())


def test_funding_from_three_venues_at_once_and_each_failure_alone(tmp_path, monkeypatch):
    with FakeVenues() as fake:
        cfg, now = setup(fake, tmp_path, monkeypatch)
        source = PaperSource(cfg)

        async def go():
            try:
                await funding_checks()
            finally:
                await source.close()

        async def funding_checks():
            for ex in source.polled.values():
                await ex.load_markets()
            feed = (await source.feeds(now))["funding"]
            assert feed["ok"] and not feed["partial"]
            btc = feed["data"]["BTC/USDT"]
            assert set(btc) == {"binance", "bybit", "okx"}
            assert btc["bybit"]["rate"] == 0.0006 and btc["bybit"]["interval_h"] == 8.0
            assert btc["binance"]["next_ts"] == now + 3_600_000
            fake.faults += [("/fapi/v1/premiumIndex", "garbage"), ("/v5/market/tickers", 429),
                            ("/api/v5/public/funding-rate", 503), ("/fapi/v1/premiumIndex", "empty")]
            t = time.perf_counter()
            feed = (await source.feeds(now))["funding"]
            assert time.perf_counter() - t < 2.5  # all at once, each within its own timeout
            errors = " ".join(feed["partial"])
            assert "bybit: RateLimitExceeded" in errors or "bybit: DDoSProtection" in errors
            assert "okx: ExchangeNotAvailable" in errors
            assert "binance BTC/USDT: no funding rate or time in the answer" in errors  # a 200 that proves nothing
            assert not feed["ok"]  # every venue failed this time: the feed is down, with every reason
            feed = (await source.feeds(now))["funding"]  # the empty 200 from binance; the others answer again
            assert feed["ok"] and set(feed["data"]["BTC/USDT"]) == {"bybit", "okx"}
            assert feed["partial"] and feed["partial"][0].startswith("binance")
            fake.faults += [("/fapi/v1/premiumIndex", "slow")]
            feed = (await source.feeds(now))["funding"]
            assert any("binance" in e and "Timeout" in e for e in feed["partial"])
        asyncio.run(go())


def test_http_feeds_fear_greed_cached_and_wallet_flows(tmp_path, monkeypatch):
    with FakeVenues() as fake:
        cfg, now = setup(fake, tmp_path, monkeypatch)
        fake.fng = 8
        t = int(time.time())
        fake.txs = [{"hash": "0x1", "timeStamp": str(t - 60), "from": WHALE, "to": EXCHANGE, "value": str(10**21)},
                    {"hash": "0x2", "timeStamp": str(t - 30), "from": EXCHANGE, "to": WHALE, "value": str(10**20)}]
        cfg["feeds"]["funding_venues"] = []  # OKX's funding path holds "/api" too: a fault for Etherscan's is its own
        source = PaperSource(cfg)

        async def go():
            fng = (await source.feeds(t * 1000))["fear_greed"]
            assert fng["ok"] and fng["data"]["value"] == 8 and fng["data"]["source"] == "alternative.me"
            fake.fng = 90
            again = (await source.feeds(t * 1000))["fear_greed"]
            assert again["data"]["value"] == 8  # cached until its next update time
            assert sum(1 for p, _ in fake.requests if p == "/fng/") == 1
            eth = np.array([[0, 1, 1, 1, 2000.0, 1]])  # an ETH price to value transfers
            stream(source, "binance", "ETH/USDT").array = eth
            onchain = (await source.feeds(t * 1000))["onchain"]
            flows = {x["id"]: (x["flow"], x["usd"]) for x in onchain["data"]["transfers"]}
            assert flows == {"0x1": ("inflow", 2_000_000.0), "0x2": ("outflow", 200_000.0)}
            fake.faults.append(("/api", "garbage"))
            broken = (await source.feeds(t * 1000))["onchain"]
            assert not broken["ok"] and broken["error"].startswith("etherscan:")
            # Whale Alert with a key: its exchange-labelled transfers join the same feed
            monkeypatch.setenv("WHALE_ALERT_API_KEY", "WAKEY")
            cfg["feeds"]["whale_alert_url"] = f"{fake.url}/v1/transactions"
            both = PaperSource(cfg)
            stream(both, "binance", "ETH/USDT").array = eth
            fake.whales = [{"blockchain": "bitcoin", "symbol": "btc", "id": "77", "transaction_type": "transfer",
                            "hash": "h77", "from": {"address": "a1", "owner_type": "unknown"},
                            "to": {"address": "b1", "owner_type": "exchange", "owner": "binance"},
                            "timestamp": t - 10, "amount": 100, "amount_usd": 9_000_000.0, "transaction_count": 1}]
            merged = (await both.feeds(t * 1000))["onchain"]
            flows = {x["id"]: (x["asset"], x["flow"], x["to"]) for x in merged["data"]["transfers"]}
            assert flows["wa-77"] == ("BTC", "inflow", "binance") and "0x1" in flows
            fake.faults.append(("/v1/transactions", 500))
            half = (await both.feeds(t * 1000))["onchain"]
            assert half["ok"] and half["partial"][0].startswith("whale alert:")
            api_calls = [q for p, q in fake.requests if p == "/v1/transactions"]
            assert api_calls[0]["api_key"] == "WAKEY" and int(api_calls[0]["min_value"]) == 1_000_000
            await both.close()
            await source.close()
            # Social volume with a LunarCrush key: per asset, against a running baseline
            monkeypatch.setenv("LUNARCRUSH_API_KEY", "LCKEY")
            cfg["feeds"]["social_url"] = f"{fake.url}/api4/public/coins/list/v2"
            social = PaperSource(cfg)
            fake.social = {"BTC": 1000, "ETH": 500, "DOGE": 9}
            first = (await social.feeds(t * 1000))["social"]
            fake.social["BTC"] = 3000
            second = (await social.feeds(t * 1000))["social"]
            assert first["ok"] and first["data"] == {"BTC": {"volume": 1000.0, "baseline": 1000.0},
                                                     "ETH": {"volume": 500.0, "baseline": 500.0}}
            assert second["data"]["BTC"] == {"volume": 3000.0, "baseline": 1000.0}
            assert fake.auth[0] == "Bearer LCKEY"
            fake.faults.append(("/api4/", "empty"))
            assert not (await social.feeds(t * 1000))["social"]["ok"]
            await social.close()
        asyncio.run(go())


def test_liquidations_side_conventions(tmp_path, monkeypatch):
    with FakeVenues() as fake:
        cfg, now = setup(fake, tmp_path, monkeypatch)
        source = PaperSource(cfg)

        async def go():
            await source.start()
            try:
                await until(lambda: fake.subscribed("binance", "btcusdt@forceOrder")
                            and fake.subscribed("bybit", "allLiquidation.BTCUSDT"))
                ms = int(time.time() * 1000)
                fake.push_liquidation("binance", "BTC", "sell", 2, 100.0, ms)  # a forced sell: a long closed
                fake.push_liquidation("bybit", "BTC", "buy", 3, 100.0, ms)  # Bybit names the position: a long
                fake.push_liquidation("bybit", "BTC", "sell", 1, 100.0, ms)  # a short
                await until(lambda: len(source.liquidations) >= 3, 5)
                feed = (await source.feeds(ms))["liquidations"]
                assert feed["ok"] and feed["data"]["BTC/USDT"] == {"long_usd": 500.0, "short_usd": 100.0,
                                                                   "window_s": 300}
            finally:
                await source.close()
        asyncio.run(go())


def test_the_loop_runs_in_paper_mode_against_the_fakes(tmp_path, monkeypatch):
    with FakeVenues() as fake:
        cfg, now = setup(fake, tmp_path, monkeypatch)
        orch = cli.build(cfg)

        async def go():
            loop = asyncio.create_task(orch.run(cycles=40, interval=0.05))
            k = 0
            while not loop.done():
                k += 1
                for venue in ("binance", "bybit"):
                    for base in ("BTC", "ETH"):
                        fake.push_kline(venue, base, [now + k * MIN, 100, 101, 99, 100.5, 5], False)
                await asyncio.sleep(0.05)
            await loop
        asyncio.run(go())
        last = orch.db.cycle()
        assert last["n"] == 40
        assert last["feeds"]["candles"] is None and last["feeds"]["funding"] is None
        assert last["feeds"]["fear_greed"] is None and last["feeds"]["social"]  # social has no source here
        assert set(last["states"].values()) <= {"trending", "ranging", "volatile"}
        assert "funding" in last["strategies"]["funding_arb"] or last["strategies"]["funding_arb"].startswith("open")


def test_check_reaches_every_source(tmp_path, monkeypatch):
    with FakeVenues() as fake:
        cfg, now = setup(fake, tmp_path, monkeypatch)
        out = subprocess.run([sys.executable, "run.py", "--config", str(tmp_path / "v.cfg"), "check"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60, env={**__import__("os").environ})
        assert out.returncode == 0, out.stdout + out.stderr
        assert "binance candles" in out.stdout and "okx funding" in out.stdout and "FAILED" not in out.stdout
        assert "fear & greed (alternative.me)" in out.stdout and "social volume" in out.stdout
        fake.faults.append(("/fng/", 500))
        out = subprocess.run([sys.executable, "run.py", "--config", str(tmp_path / "v.cfg"), "check"], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 1 and "FAILED" in out.stdout


def test_binance_spot_candles_stream_too(tmp_path, monkeypatch):
    with FakeVenues() as fake:
        cfg, now = setup(fake, tmp_path, monkeypatch)
        fake.seed("binance_spot", "BTC", now - 400 * MIN, 400, price=99.0)
        fake.seed("binance_spot", "ETH", now - 400 * MIN, 400, price=49.0)
        cfg["market"]["venues"] = ["binance", "binance_spot"]
        source = PaperSource(cfg)

        async def go():
            await source.start()
            try:
                spot = stream(source, "binance_spot", "BTC/USDT")
                await until(lambda: len(spot.candles()) and len(stream(source, "binance", "BTC/USDT").candles()))
                assert spot.market_symbol == "BTC/USDT" and spot.candles()[-1, 0] == now - MIN
                assert source.bar("binance_spot", "BTC/USDT")["high"] == 107.0  # the spot book, not the perp's
                assert source.bar("binance", "BTC/USDT")["high"] == 108.0
            finally:
                await source.close()
        asyncio.run(go())


def test_a_backfill_on_a_venue_that_pages_newest_first_gets_every_bar(tmp_path, monkeypatch):
    """OKX answers a window newest first, at most a page of it: a window asked wider than a page would lose its
    older bars, so the backfill asks windows a page long."""
    from vigil import venues
    with FakeVenues() as fake:
        cfg, now = setup(fake, tmp_path, monkeypatch)
        fake.seed("okx", "BTC", now - 400 * MIN, 400)
        fake.seed("okx", "ETH", now - 400 * MIN, 400)
        fake.pages["okx"] = (60, 60)
        monkeypatch.setitem(venues.PAGES, "okx", (60, 60))
        cfg["market"]["venues"], cfg["market"]["trade_venue"] = ["okx"], "okx"
        source = PaperSource(cfg)

        async def go():
            await source.start()
            try:
                s = stream(source, "okx", "BTC/USDT")
                await until(lambda: len(s.candles()) and s.candles()[-1, 0] == now - MIN)
                return s.candles()
            finally:
                await source.close()
        c = asyncio.run(go())
        # every bar the fake holds from history bars ago (by the wall clock) to its last: no hole, none left out
        assert len(c) >= cfg["market"]["history"] - 12 and (np.diff(c[:, 0]) == MIN).all()
