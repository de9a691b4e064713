import asyncio
import logging

import pytest

from fake_venue import FakeVenues
from vigil import venues
from vigil.executor import Executor
from vigil.live_broker import LiveBroker
from vigil.storage import Storage

SECRET = "SECRETKEY123456"


VENUES = pytest.mark.parametrize("venue", ["binance", "bybit"])


def order(cid, qty=0.5, side="buy", venue="binance"):
    return {"id": cid, "cycle": 1, "proposal_id": "p", "position_id": "p", "strategy": "s", "leg": 0,
            "venue": venue, "symbol": "BTC/USDT", "side": side, "market": "swap", "type": "market", "qty": qty,
            "price": None, "ref_price": 100.0, "reduce_only": False, "status": "pending", "filled": 0.0,
            "avg_price": None, "fee": 0.0, "fee_ccy": "USDT", "exchange_id": None, "error": None, "created_at": 0}


def broker(fake, secret=SECRET, venue="binance"):
    ex = venues.client({f"venue.{venue}": {"rest_url": fake.url, "ws_url": ""}}, venue, 1.0, throttled=False)
    ex.apiKey, ex.secret = "TESTKEY", secret
    return ex, LiveBroker({venue: ex})


def run(fake, body, secret=SECRET, venue="binance"):
    async def go():
        ex, b = broker(fake, secret, venue)
        try:
            return await body(b)
        finally:
            await ex.close()
    return asyncio.run(go())


@VENUES
def test_a_filled_order_books_its_fee_in_the_real_currency(venue):
    with FakeVenues() as fake:
        done, fills = run(fake, lambda b: b.place(order("vg1-a", venue=venue)), venue=venue)
        assert done["status"] == "filled" and done["filled"] == 0.5 and done["exchange_id"] == "1000"
        assert fills[0]["price"] == 100.0 and fake.orders["vg1-a"]["side"] == "BUY"
        # Binance charges this account in BNB, Bybit in USDT: each is kept in its own currency, and the books
        # count it in USDT (BNB at its last price)
        ccy, fee = ("BNB", 0.025 / 600) if venue == "binance" else ("USDT", 0.0275)
        assert (done["fee_ccy"], fills[0]["fee_ccy"]) == (ccy, ccy) and fills[0]["fee"] == pytest.approx(fee)
        assert fills[0]["fee_usdt"] == pytest.approx(0.025 if venue == "binance" else 0.0275)


@VENUES
def test_unknown_outcomes_are_resolved_by_client_id_never_resent(venue):
    with FakeVenues() as fake:
        for fault in ("timeout", "garbage", 503):
            fake.order_faults = [fault]
            done, fills = run(fake, lambda b: b.place(order(f"vg1-{fault}", venue=venue)), venue=venue)
            assert done["status"] == "filled" and fills  # the lookup found what the answer did not prove
        assert fake.order_posts == ["vg1-timeout", "vg1-garbage", "vg1-503"]  # one request each: none twice


@VENUES
def test_throttling_is_retried_rejections_never(venue):
    with FakeVenues() as fake:
        fake.order_faults = [429]
        done, _ = run(fake, lambda b: b.place(order("vg1-t", venue=venue)), venue=venue)
        assert done["status"] == "filled" and fake.order_posts == ["vg1-t", "vg1-t"]
        fake.order_faults = ["reject"]
        done, fills = run(fake, lambda b: b.place(order("vg1-r", venue=venue)), venue=venue)
        assert done["status"] == "rejected" and "insufficient" in done["error"].lower() and not fills
        assert fake.order_posts.count("vg1-r") == 1


def test_a_418_ban_is_backed_off_like_a_429():
    with FakeVenues() as fake:
        fake.order_faults = [418]
        done, _ = run(fake, lambda b: b.place(order("vg1-ban")))
        assert done["status"] == "filled" and fake.order_posts == ["vg1-ban", "vg1-ban"]


@VENUES
def test_partial_fill_minimum_size_and_bad_keys(venue):
    with FakeVenues() as fake:
        fake.order_faults = ["partial"]
        done, fills = run(fake, lambda b: b.place(order("vg1-p", venue=venue)), venue=venue)
        assert done["status"] == "partial" and done["filled"] == 0.25 and fills[0]["qty"] == 0.25
        tiny, _ = run(fake, lambda b: b.place(order("vg1-tiny", qty=0.0001, venue=venue)), venue=venue)
        assert tiny["status"] == "rejected" and "minimum" in tiny["error"]  # caught before sending
        small, _ = run(fake, lambda b: b.place(order("vg1-small", qty=0.04, venue=venue)), venue=venue)
        assert small["status"] == "rejected" and "notional 4.00 is below the market minimum 5" in small["error"]
        exit_, _ = run(fake, lambda b: b.place(dict(order("vg1-exit", qty=0.04, side="sell", venue=venue),
                                                    reduce_only=True)), venue=venue)
        assert exit_["status"] == "filled"  # an exit is never blocked by the minimum notional
        assert "vg1-tiny" not in fake.order_posts and "vg1-small" not in fake.order_posts
        bad, _ = run(fake, lambda b: b.place(order("vg1-bad", venue=venue)), secret="WRONGSECRET999", venue=venue)
        assert bad["status"] == "rejected" and "sign" in bad["error"].lower() and "vg1-bad" not in fake.orders


@VENUES
def test_check_warns_when_the_key_may_withdraw(venue):
    with FakeVenues() as fake:
        [(name, problem, details)] = run(fake, lambda b: b.check(), venue=venue)
        assert (name, problem) == (venue, None) and "USDT free 10000" in details
        fake.withdrawals = True
        [(_, problem, _)] = run(fake, lambda b: b.check(), venue=venue)
        assert "WITHDRAW" in problem
        fake.withdrawals, fake.may_trade = False, False
        [(_, problem, _)] = run(fake, lambda b: b.check(), venue=venue)
        assert problem.startswith("the key lacks the permission to trade") and "Futures" in problem or "Contract" in problem


def test_second_leg_rejected_unwinds_the_first_and_records_both(tmp_path):
    from live_driver import intents
    with FakeVenues() as fake:
        fake.order_faults = [None, "reject"]
        db = Storage(str(tmp_path / "v.db"))
        cycle, trade = intents("binance")[0]

        async def go():
            ex, b = broker(fake)
            try:
                return await Executor(db, b, lambda: False).open(trade, cycle, 0)
            finally:
                await ex.close()
        position = asyncio.run(go())
        assert position["status"] == "closed" and position["close_reason"] == "leg failed"
        statuses = {o["id"].split("-")[-1]: o["status"] for o in db.orders()}
        assert statuses == {"0o": "filled", "1o": "rejected", "0c1": "filled"}  # opened, refused, unwound
        assert fake.orders[next(i for i in fake.orders if i.endswith("0c1"))]["side"] == "SELL"


def test_secrets_never_reach_logs_or_the_database(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with FakeVenues() as fake:
        fake.order_faults = ["timeout", "reject"]
        run(fake, lambda b: b.place(order("vg1-s1")))
        run(fake, lambda b: b.place(order("vg1-s2")))
        bad, _ = run(fake, lambda b: b.place(order("vg1-s3")), secret="WRONGSECRET999")
        db = Storage(str(tmp_path / "v.db"))
        db.save_order(bad)
        db.close()
    raw = (tmp_path / "v.db").read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("v.db-*"))
    for secret in (SECRET, "WRONGSECRET999"):
        assert secret not in caplog.text and secret.encode() not in raw and secret not in bad["error"]


def live_config(tmp_path, fake, monkeypatch, extra="", venues=("binance",)):
    import time as _time
    from fake_venue import MIN
    from vigil import config
    now = int(_time.time() * 1000) // MIN * MIN - 10 * MIN
    sections = ""
    for venue in venues:
        for base in ("BTC", "ETH"):
            fake.seed(venue, base, now - 400 * MIN, 400)
            fake.funding[(venue, base)] = (0.0001, now + 3_600_000, 8.0)
        monkeypatch.setenv(f"{venue.upper()}_API_KEY", "TESTKEY")
        monkeypatch.setenv(f"{venue.upper()}_API_SECRET", SECRET)
        sections += f"[venue.{venue}]\nrest_url = {fake.url}\nws_url = {fake.ws}\n"
    path = tmp_path / "v.cfg"
    path.write_text(f"[vigil]\nmode = live\ndb = {tmp_path}/v.db\nconsole = false\n"
                    f"[market]\nvenues = {', '.join(venues)}\nsymbols = BTC/USDT, ETH/USDT\n"
                    f"trade_venue = {venues[0]}\n{sections}"
                    f"[feeds]\nfunding_venues = {', '.join(venues)}\ntimeout = 1\nfear_greed_url = {fake.url}/fng/\n"
                    f"{extra}")
    return path, config.load(path)


def test_reconciliation_reports_foreign_positions_and_halts_on_differences(tmp_path, monkeypatch):
    from vigil import cli
    with FakeVenues() as fake:
        path, cfg = live_config(tmp_path, fake, monkeypatch)
        fake.extra_positions["ETHUSDT"] = 2.0  # opened by hand: not Vigil's
        fake.open_orders = [{"orderId": 5, "symbol": "ETHUSDT", "clientOrderId": "manual-1", "status": "NEW",
                             "price": "90", "origQty": "1", "executedQty": "0", "type": "LIMIT", "side": "BUY",
                             "timeInForce": "GTC", "time": 0, "updateTime": 0, "avgPrice": "0"}]
        orch = cli.build(cfg)

        async def go():
            try:
                await orch.reconcile()
                alerts = orch.db.alerts("reconcile")
                assert any("ETH/USDT: a position of 2 that Vigil did not open, left alone" in a for a in alerts)
                assert any("manual-1" in a and "left alone" in a for a in alerts)
                assert not orch.control.is_halted()
                fake.balance = 10050.0  # more money than Vigil's trades explain: reported, trading goes on
                await orch.reconcile()
                assert not orch.control.is_halted()
                assert orch.db.alerts()[-1] == (
                    "wallet balances moved +50.00 USDT, Vigil's realized PnL +0.00: +50.00 unexplained (a deposit?)")
                fake.balance = 9950.0  # less: halt, naming it
                await orch.reconcile()
                assert orch.control.is_halted() and "wallet balances moved -100.00 USDT" in orch.control.halt["reason"]
                orch.control.resume()
                # the database believes in a position the exchange does not have: halt, naming it
                orch.db.save_position({"id": "p9", "strategy": "momentum", "status": "open", "closed_at": None,
                                       "kind": "directional", "stop": None, "stop_order": None, "stop_held": False,
                                       "legs": [{"venue": "binance", "symbol": "BTC/USDT", "side": "buy",
                                                 "market": "swap", "qty": 0.5}]})
                await orch.reconcile()
                assert orch.control.is_halted() and "the database holds 0.5, the exchange 0" in orch.control.halt["reason"]
            finally:
                await orch.executor.broker.close()
        asyncio.run(go())


def test_live_check_verifies_keys_withdrawals_and_clock(tmp_path, monkeypatch):
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    with FakeVenues() as fake:
        path, cfg = live_config(tmp_path, fake, monkeypatch)
        ok = subprocess.run([sys.executable, "run.py", "--config", str(path), "check"], cwd=root,
                            capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "binance account (USDT free 10000.0, clock skew" in ok.stdout
        fake.withdrawals, fake.clock_offset_ms = True, 5000
        bad = subprocess.run([sys.executable, "run.py", "--config", str(path), "check"], cwd=root,
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 1 and "WITHDRAW" in bad.stdout and "clock skew" in bad.stdout
        assert SECRET not in ok.stdout + ok.stderr + bad.stdout + bad.stderr


def test_the_loop_runs_live_against_the_fake(tmp_path, monkeypatch):
    import subprocess
    import sys
    from pathlib import Path
    from vigil.storage import Storage
    root = Path(__file__).resolve().parent.parent
    with FakeVenues() as fake:
        path, cfg = live_config(tmp_path, fake, monkeypatch, "[live]\nreconcile_every = 2\n")
        out = subprocess.run([sys.executable, "run.py", "--config", str(path), "--live", "--cycles", "4",
                              "--interval", "0.2"], cwd=root, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        db = Storage(str(tmp_path / "v.db"))
        assert db.last_cycle() == 4 and db.get("halt") is None
        assert "TESTKEY" not in out.stderr and SECRET not in out.stderr


def test_every_rejection_is_alerted(tmp_path):
    from live_driver import intents
    with FakeVenues() as fake:
        fake.order_faults = ["reject"]
        alerts = []
        db = Storage(str(tmp_path / "v.db"))
        cycle, trade = intents("binance")[0]

        async def go():
            ex, b = broker(fake)
            try:
                await Executor(db, b, lambda: False, lambda kind, text: alerts.append((kind, text))).open(trade, 1, 0)
            finally:
                await ex.close()
        asyncio.run(go())
        assert alerts and alerts[0][0] == "order" and "rejected" in alerts[0][1] and "Margin" in alerts[0][1]


def test_the_operator_settles_a_difference_by_adopting_or_closing_it(tmp_path, monkeypatch):
    from vigil import cli
    with FakeVenues() as fake:
        path, cfg = live_config(tmp_path, fake, monkeypatch)
        orch = cli.build(cfg)
        held = {"id": "5:momentum:BTC/USDT:open", "strategy": "momentum", "symbol": "BTC/USDT", "kind": "directional",
                "side": "buy", "legs": [{"venue": "binance", "symbol": "BTC/USDT", "side": "buy", "market": "swap",
                                         "qty": 0.5, "opened_qty": 0.5, "entry": 100.0, "mark": 100.0,
                                         "funding": 0.0, "funding_ts": 0}],
                "opened_at": 0, "stop": None, "target": None, "exit_by": 0, "status": "open", "fees": 0.0,
                "funding": 0.0, "realized_pnl": 0.0, "unrealized_pnl": 0.0, "closed_at": None,
                "close_reason": None, "proposal_id": "5:momentum:BTC/USDT:open", "stop_order": None, "stop_held": False}
        orch.db.save_position(held)
        orch.book.positions[held["id"]] = held

        async def go():
            try:
                fake.extra_positions["BTCUSDT"] = 0.3  # the exchange holds less than the books
                await orch.reconcile()
                assert orch.control.is_halted() and [g["exchange"] for g in orch.gaps] == [0.3]
                [written] = await orch.settle_gap(orch.gaps[0], close=False)
                assert written["legs"][0]["qty"] == pytest.approx(0.3) and written["status"] == "open"
                orch.control.resume()
                await orch.reconcile()
                assert not orch.control.is_halted() and not orch.gaps
                fake.extra_positions["BTCUSDT"] = 0.7  # now more than the books: adopt it, then close it
                await orch.reconcile()
                assert orch.control.is_halted() and orch.gaps[0]["books"] == pytest.approx(0.3)
                [adopted] = await orch.settle_gap(orch.gaps[0], close=True)
                assert adopted["strategy"] == "operator" and adopted["status"] == "closed"
                assert fake.net_positions()["BTCUSDT"] == pytest.approx(0.3)  # the extra 0.4 sold at market
                orch.control.resume()
                await orch.reconcile()
                assert not orch.control.is_halted()
                notes = orch.db.alerts("reconcile")
                assert sum("by the operator" in t for t in notes) == 2  # both recorded
            finally:
                await orch.executor.broker.close()
        asyncio.run(go())


def test_check_runs_reconciliation_on_both_venues_and_flags_hedge_mode(tmp_path, monkeypatch):
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    with FakeVenues(nodelay=True) as fake:
        path, cfg = live_config(tmp_path, fake, monkeypatch, venues=("binance", "bybit"))
        ok = subprocess.run([sys.executable, "run.py", "--config", str(path), "check"], cwd=root,
                            capture_output=True, text=True, timeout=60)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "bybit reconciliation (0 positions, 0 open orders)  ok" in " ".join(ok.stdout.split("  "))  \
            or "bybit reconciliation (0 positions, 0 open orders)" in ok.stdout
        fake.hedge_mode = True
        bad = subprocess.run([sys.executable, "run.py", "--config", str(path), "check"], cwd=root,
                             capture_output=True, text=True, timeout=60)
        assert bad.returncode == 1 and bad.stdout.count("hedge mode (dual side) is on") == 2, bad.stdout


def test_clock_refusals_are_retried_after_a_resync_and_three_in_a_row_halt(tmp_path):
    from live_driver import intents
    with FakeVenues(nodelay=True) as fake:
        db = Storage(str(tmp_path / "v.db"))
        halts = []

        async def go(cycle):
            ex, b = broker(fake)
            try:
                return await Executor(db, b, lambda: False, kill=halts.append).open(intents("binance")[cycle - 1][1],
                                                                                    cycle, 0)
            finally:
                await ex.close()
        fake.recv_window_errors = 1  # one refusal: the clock is read again and the same id goes through
        assert asyncio.run(go(1))["status"] == "open" and not halts
        fake.recv_window_errors = 100  # the clock stays off: nothing is sent and trading halts, saying why
        position = asyncio.run(go(2))
        assert halts and "timestamp" in halts[0] and position["status"] == "void"
        assert all(o["status"] == "rejected" for o in db.orders() if o["cycle"] == 2)


def test_balance_shows_the_venues_wallets_in_live(tmp_path, monkeypatch):
    from fake_telegram import FakeBotAPI
    from helpers import until
    from vigil import cli
    from vigil.bot import Bot
    with FakeVenues(nodelay=True) as fake, FakeBotAPI() as api:
        monkeypatch.setenv("VIGIL_TELEGRAM_TOKEN", api.token)
        path, cfg = live_config(tmp_path, fake, monkeypatch, f"[telegram]\nenabled = true\napi_url = {api.url}\n"
                                                             "chat_ids = 1\nuser_ids = 1\npoll_timeout = 1\n")
        orch = cli.build(cfg)

        async def go():
            bot = Bot(cfg, orch)
            await bot.start()
            try:
                before = len(api.sent)
                api.message("/balance")
                await until(lambda: any("binance USDT" in t for c, t, _ in api.sent[before:]))
            finally:
                await bot.stop()
                await orch.executor.broker.close()
        asyncio.run(go())
        [text] = [t for _, t, _ in api.sent if "binance USDT" in t]
        assert text == "binance USDT: free 10000, used 0, total 10000"
