"""Protective stops held by the venue: placed for what an entry filled, cancelled by an exit, booked when they
fire, placed again when the venue drops them; real ccxt against the fake Binance USD-M and Bybit v5."""
import asyncio

import pytest

from fake_venue import FakeVenues
from vigil import tracker, venues
from vigil.executor import Executor
from vigil.live_broker import LiveBroker, reconcile
from vigil.schemas import ORDER_WORKING
from vigil.storage import Storage

VENUES = pytest.mark.parametrize("venue", ["binance", "bybit"])


def directional(venue, cycle=1, side="buy", qty=0.5, stop=90.0, symbol="BTC/USDT"):
    """An approved directional trade with a stop, as risk hands it to the executor."""
    proposal = {"id": f"{cycle}:momentum:{symbol}", "strategy": "momentum", "symbol": symbol, "side": side,
                "kind": "directional", "intent": "open", "position_id": None,
                "legs": [{"venue": venue, "symbol": symbol, "side": side, "market": "swap"}], "confidence": 1.0,
                "entry": 100.0, "stop": stop, "target": None, "max_hold_s": 0, "reason": "test", "created_at": 0}
    leg = {"venue": venue, "symbol": symbol, "side": side, "market": "swap", "qty": qty, "price": 100.0,
           "notional": qty * 100.0}
    return {"proposal": proposal, "legs": [leg], "checks": []}


def session(tmp_path, fake, venue, body):
    """Runs body(executor, db, client) with an executor that keeps venue stops, against one fake venue."""
    async def go():
        ex = venues.client({f"venue.{venue}": {"rest_url": fake.url, "ws_url": ""}}, venue, 1.0, throttled=False)
        ex.apiKey, ex.secret = fake.api_key, fake.secret
        broker = LiveBroker({venue: ex}, patience_s=1.0, window_s=0.0, missing_lookups=2)
        db = Storage(str(tmp_path / "v.db"))
        alerts = []
        executor = Executor(db, broker, lambda: False, lambda kind, text: alerts.append((kind, text)),
                            venue_stops=True)
        try:
            return await body(executor, db, ex, alerts)
        finally:
            await ex.close()
            db.close()
    return asyncio.run(go())


def net(fake):
    return fake.net_positions().get("BTCUSDT", 0.0)


@VENUES
def test_an_entry_gets_a_stop_on_the_venue_for_what_filled(tmp_path, venue):
    with FakeVenues() as fake:
        fake.order_faults = ["partial"]  # half the entry fills, the rest expires

        async def body(executor, db, ex, alerts):
            return await executor.open(directional(venue), 1, 0)
        position = session(tmp_path, fake, venue, body)
        assert position["status"] == "open" and position["legs"][0]["qty"] == 0.25
        [(cid, stop)] = fake.resting_stops().items()
        assert stop == ("SELL", 0.25, 90.0) and cid == position["stop_order"]
        assert cid.startswith("vg1-moment-BTC-0s1.0")  # derived from the position, written ahead like any order
        fake.order_faults = []

        short = directional(venue, 2, side="sell", qty=0.3, stop=111.0, symbol="ETH/USDT")

        async def again(executor, db, ex, alerts):
            await executor.open(short, 2, 0)
            return await executor.open(directional(venue), 1, 0)  # a replay: nothing is sent twice
        session(tmp_path, fake, venue, again)
        assert sorted(fake.resting_stops().values()) == [("BUY", 0.3, 111.0), ("SELL", 0.25, 90.0)]
        assert len(fake.order_posts) == len(set(fake.order_posts)) == 4


@VENUES
def test_an_exit_cancels_the_stop_and_a_stop_that_fired_first_closes_the_books(tmp_path, venue):
    with FakeVenues() as fake:
        async def exit_(executor, db, ex, alerts):
            position = await executor.open(directional(venue), 1, 0)
            return await executor.close(position, 2, 0, "target")
        position = session(tmp_path, fake, venue, exit_)
        assert position["status"] == "closed" and position["close_reason"] == "target"
        assert not fake.resting_stops() and net(fake) == 0
        stop = Storage(str(tmp_path / "v.db")).order(next(cid for cid in fake.stops))
        assert stop["status"] == "cancelled" and stop["error"] == "cancelled by Vigil: exit: target"

        # the venue fires the stop before the exit goes out: the cancel finds it filled, no exit is sent
        fake.duplicate_trades = True  # and its trade reported twice is booked once

        async def race(executor, db, ex, alerts):
            position = await executor.open(directional(venue, 3), 3, 0)
            fake.move_price(89.0)
            return await executor.close(position, 4, 0, "target")
        position = session(tmp_path, fake, venue, race)
        assert position["status"] == "closed" and position["close_reason"] == "stop"
        assert position["realized_pnl"] < -5 and net(fake) == 0
        assert not [cid for cid in fake.order_posts if cid.startswith("vg4")]  # no exit was sent


@VENUES
def test_a_stop_fired_while_away_is_booked_and_a_dropped_stop_is_placed_again(tmp_path, venue):
    with FakeVenues() as fake:
        async def open_two(executor, db, ex, alerts):
            await executor.open(directional(venue), 1, 0)
            return await executor.open(directional(venue, 2, side="sell", qty=0.3, stop=111.0,
                                                   symbol="ETH/USDT"), 2, 0)
        session(tmp_path, fake, venue, open_two)
        fake.move_price(89.5)  # the long's stop fires at the venue while nobody watches
        fake.drop_stops()  # and the venue drops the short's

        async def follow(executor, db, ex, alerts):
            await executor.follow(3, 0)
            problems, _, _ = await reconcile({venue: ex}, db, ["BTC/USDT"], 1e9)
            return db, alerts, problems
        db, alerts, problems = session(tmp_path, fake, venue, follow)
        db = Storage(str(tmp_path / "v.db"))
        long, short = db.positions()
        assert long["status"] == "closed" and long["close_reason"] == "stop" and net(fake) == 0
        assert sum(f["qty"] for o in db.orders(position_id=long["id"]) if o["reduce_only"]
                   for f in db.fills(o["id"])) == 0.5
        assert short["status"] == "open" and list(fake.resting_stops()) == [short["stop_order"]]
        assert short["stop_order"].endswith(".1")  # the second stop of that position
        assert [kind for kind, _ in alerts] == ["stop"] and "gone from" in alerts[0][1]
        assert problems == []
        working = [o["id"] for o in db.orders(statuses=ORDER_WORKING)]
        assert working == [short["stop_order"]]


@VENUES
def test_a_stop_whose_answer_was_lost_is_watched_by_vigil_until_the_venue_confirms_it(tmp_path, venue):
    with FakeVenues() as fake:
        fake.order_faults = [None, (503, "lag")]  # the stop is taken, its answer lost, its lookups lag
        crossed = {(venue, "BTC/USDT"): {"ts": 60_000, "open": 95.0, "high": 95.0, "low": 88.0, "close": 89.0,
                                         "volume": 10.0}}

        async def body(executor, db, ex, alerts):
            position = await executor.open(directional(venue), 1, 0)
            unconfirmed = tracker.mark(position, crossed, None, 60_000)
            await executor.follow(2, 0)  # the lookup finds the stop resting: now the venue's to fire
            confirmed = tracker.mark(db.position(position["id"]), crossed, None, 60_000)
            return position, unconfirmed, confirmed
        position, (_, reason, level), (held, later, _) = session(tmp_path, fake, venue, body)
        assert position["stop_order"] in fake.resting_stops() and not position["stop_held"]
        assert (reason, level) == ("stop", 90.0)  # Vigil fires it itself: the position is never unguarded
        assert held["stop_held"] and later is None


@VENUES
def test_reconciliation_names_a_stray_vigil_stop(tmp_path, venue):
    with FakeVenues() as fake:
        async def body(executor, db, ex, alerts):
            position = await executor.open(directional(venue), 1, 0)
            # the books forget the stop (a database restored from an old backup): the venue still holds it
            stop = dict(db.order(position["stop_order"]), status="cancelled")
            db.save_order(stop)
            return (await reconcile({venue: ex}, db, ["BTC/USDT"], 1e9))[0]
        problems = session(tmp_path, fake, venue, body)
        assert len(problems) == 1 and "rests at the exchange" in problems[0] and "0s1.0" in problems[0]


@VENUES
def test_a_position_written_down_to_the_exchange_has_its_stop_resized(tmp_path, venue):
    with FakeVenues() as fake:
        async def body(executor, db, ex, alerts):
            position = await executor.open(directional(venue), 1, 0)
            fake.extra_positions["BTCUSDT"] = -0.2  # closed in part by hand: the venue holds 0.3
            gap = {"venue": venue, "symbol": "BTC/USDT", "books": 0.5, "exchange": 0.3, "mark": 100.0}
            [written] = executor.adopt(gap, [position], 2, 0)
            return await executor.protect(written, 2, 0)
        position = session(tmp_path, fake, venue, body)
        assert position["legs"][0]["qty"] == pytest.approx(0.3)
        assert fake.resting_stops() == {position["stop_order"]: ("SELL", 0.3, 90.0)}
        first, second = [o for o in Storage(str(tmp_path / "v.db")).orders() if o["type"] == "venue_stop"]
        assert second["id"] == position["stop_order"] and first["status"] == "cancelled" and first["error"] == "cancelled by Vigil: resized"
