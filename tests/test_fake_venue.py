"""The fake venues at their worst, driven by the real ccxt clients Vigil uses."""
import asyncio

import ccxt
import pytest

from fake_venue import FakeVenues
from vigil import venues

BTC, ETH = "BTC/USDT:USDT", "ETH/USDT:USDT"
VENUES = pytest.mark.parametrize("venue", ["binance", "bybit"])


def run(fake, venue, body, load=True):
    async def go():
        ex = venues.client({f"venue.{venue}": {"rest_url": fake.url, "ws_url": ""}}, venue, 1.0, throttled=False)
        ex.apiKey, ex.secret = "TESTKEY", "SECRETKEY123456"
        ex.timeout_on_exit = 0  # ccxt's 250 ms grace for closing TLS sessions; plain HTTP here
        try:
            if load:
                await ex.load_markets()
            return await body(ex)
        finally:
            await ex.close()
    return asyncio.run(go())


def place(ex, cid, side="buy", **params):
    return ex.create_order(BTC, "market", side, 0.5, None, dict(params, clientOrderId=cid))


async def lookup(ex, cid=None, order_id=None):
    """The unified order, asked by client id (or exchange id) the way each venue allows."""
    if ex.id != "bybit":
        return await ex.fetch_order(order_id, BTC, {} if order_id else {"clientOrderId": cid})
    ask = {"orderId": order_id} if order_id else {"orderLinkId": cid}
    rows = (await ex.private_get_v5_order_realtime(dict(ask, category="linear")))["result"]["list"]
    if not rows:
        raise ccxt.OrderNotFound(f"no {cid}")
    return ex.parse_order(rows[0], ex.market(BTC))


async def cancel(ex, cid):
    # ccxt's Bybit does not translate clientOrderId for cancels: orderLinkId it is
    return await ex.cancel_order(None, BTC, {"orderLinkId": cid} if ex.id == "bybit" else {"clientOrderId": cid})


def seen(order):
    return order["status"], order["filled"], order["remaining"]


@VENUES
def test_a_new_order_fills_on_a_later_lookup(venue):
    with FakeVenues(nodelay=True) as fake:
        fake.order_faults, fake.fill_after_lookups = ["new", "new"], 2

        async def body(ex):
            first = await place(ex, "vg-n")
            # Binance answers NEW with nothing filled; Bybit's create answers ids only
            assert seen(first) == (("open", 0.0, 0.5) if venue == "binance" else (None, None, None))
            assert seen(await lookup(ex, "vg-n")) == ("open", 0.0, 0.5)  # not yet: the second lookup fills it
            done = await lookup(ex, "vg-n")
            assert seen(done) == ("closed", 0.5, 0.0) and done["average"] == 100.0
            [trade] = await ex.fetch_my_trades(BTC, params={"orderId": done["id"]})
            assert trade["amount"] == 0.5 and trade["order"] == done["id"]
            await place(ex, "vg-n2")
            fake.settle_all()  # time passes between cycles: no lookup needed
            assert fake.orders["vg-n2"]["status"] == "FILLED" and fake.orders["vg-n2"]["_looks"] == 0
        run(fake, venue, body)


@VENUES
def test_partial_then_fill_lists_both_trades(venue):
    with FakeVenues(nodelay=True) as fake:
        fake.order_faults, fake.price = ["partial_then_fill"], 101.0

        async def body(ex):
            first = await place(ex, "vg-pf")
            if venue == "binance":
                assert first["info"]["status"] == "PARTIALLY_FILLED" and seen(first) == ("open", 0.25, 0.25)
            assert (await ex.fetch_open_orders(BTC))[0]["clientOrderId"] == "vg-pf"  # still working
            done = await lookup(ex, "vg-pf")
            assert seen(done) == ("closed", 0.5, 0.0) and done["average"] == 101.0
            trades = await ex.fetch_my_trades(BTC, params={"orderId": done["id"]})
            assert [t["amount"] for t in trades] == [0.25, 0.25] and len({t["id"] for t in trades}) == 2
            if venue == "bybit":  # also asked by client id
                raw = await ex.private_get_v5_execution_list({"category": "linear", "orderLinkId": "vg-pf"})
                assert [r["execId"] for r in raw["result"]["list"]] == [t["id"] for t in trades]
            assert not await ex.fetch_open_orders(BTC)
        run(fake, venue, body)


@VENUES
def test_partial_then_expire_keeps_only_the_first_half(venue):
    with FakeVenues(nodelay=True) as fake:
        fake.order_faults = ["partial_then_expire"]

        async def body(ex):
            await place(ex, "vg-pe")
            done = await lookup(ex, "vg-pe")
            # Bybit's PartiallyFilledCanceled is "closed" to ccxt, with leavesQty 0 as remaining
            assert seen(done) == (("expired", 0.25, 0.25) if venue == "binance" else ("closed", 0.25, 0.0))
            assert done["info"].get("orderStatus", done["info"].get("status")) in ("EXPIRED", "PartiallyFilledCanceled")
            assert len(await ex.fetch_my_trades(BTC, params={"orderId": done["id"]})) == 1
        run(fake, venue, body)


@VENUES
def test_a_lagging_index_hides_the_order_from_client_id_lookups(venue):
    with FakeVenues(nodelay=True) as fake:
        fake.order_faults = [(503, "lag")]  # taken, the answer lost, and the id index behind

        async def body(ex):
            with pytest.raises(ccxt.OperationFailed):
                await place(ex, "vg-lag")
            for _ in range(fake.lag_lookups):
                with pytest.raises(ccxt.OrderNotFound):
                    await lookup(ex, "vg-lag")
            order_id = str(fake.orders["vg-lag"]["orderId"])
            assert seen(await lookup(ex, order_id=order_id))[0] == "closed"  # by exchange id it is there
            assert seen(await lookup(ex, "vg-lag")) == ("closed", 0.5, 0.0)
        run(fake, venue, body)
        assert fake.order_posts == ["vg-lag"]


@VENUES
def test_duplicate_trades_repeat_the_same_id(venue):
    with FakeVenues(nodelay=True) as fake:
        fake.duplicate_trades = True

        async def body(ex):
            order = await place(ex, "vg-d")
            trades = await ex.fetch_my_trades(BTC, params={"orderId": order["id"]})
            assert len(trades) == 2 and trades[0]["id"] == trades[1]["id"] and trades[0]["amount"] == 0.5
        run(fake, venue, body)


@VENUES
def test_cancel_a_working_order_keeps_its_partial_fill(venue):
    with FakeVenues(nodelay=True) as fake:
        fake.order_faults = ["never", "partial_then_fill"]
        fake.open_orders = [{"orderId": 5, "symbol": "ETHUSDT", "clientOrderId": "manual-1", "status": "NEW",
                             "price": "90", "origQty": "1", "executedQty": "0", "type": "LIMIT", "side": "BUY",
                             "timeInForce": "GTC", "time": 0, "updateTime": 0, "avgPrice": "0"}]

        async def body(ex):
            await place(ex, "vg-never")
            await place(ex, "vg-half")
            for _ in range(3):
                assert seen(await lookup(ex, "vg-never")) == ("open", 0.0, 0.5)
            assert {o["clientOrderId"] for o in await ex.fetch_open_orders(BTC)} == {"vg-never", "vg-half"}
            assert [o["clientOrderId"] for o in await ex.fetch_open_orders(ETH)] == ["manual-1"]
            await cancel(ex, "vg-never")
            await cancel(ex, "vg-half")  # before any lookup: half filled, half cancelled
            assert [fake.orders[c]["status"] for c in ("vg-never", "vg-half")] == ["CANCELED", "CANCELED"]
            assert seen(await lookup(ex, "vg-never"))[:2] == ("canceled", 0.0)
            half = await lookup(ex, "vg-half")
            assert seen(half)[:2] == ("canceled" if venue == "binance" else "closed", 0.25)
            assert not await ex.fetch_open_orders(BTC)
            for cid in ("vg-never", "nobody"):  # finished or unknown
                with pytest.raises(ccxt.OrderNotFound):
                    await cancel(ex, cid)
        run(fake, venue, body)
        assert fake.net_positions()["BTCUSDT"] == 0.25


@VENUES
def test_clock_errors_persist_until_used_up(venue):
    with FakeVenues(nodelay=True) as fake:
        async def body(ex):
            await place(ex, "vg-0")  # ccxt's Bybit asks two account endpoints (at once) before its first order
            fake.recv_window_errors = 2
            for _ in range(2):
                with pytest.raises(ccxt.InvalidNonce):  # an OperationFailed: "maybe it happened" to generic code
                    await place(ex, "vg-c")
            assert fake.order_posts == ["vg-0"] and fake.recv_window_errors == 0
            assert (await place(ex, "vg-c"))["id"]
        run(fake, venue, body)


@VENUES
def test_duplicate_client_ids_are_refused(venue):
    with FakeVenues(nodelay=True) as fake:
        async def body(ex):
            await place(ex, "vg-dup")
            with pytest.raises(ccxt.ExchangeError) as refused:
                await place(ex, "vg-dup")
            return refused.value
        error = run(fake, venue, body)
        assert fake.duplicate_posts == ["vg-dup"]
        # Binance USD-M's -4116 is a bare ExchangeError in ccxt; Bybit's 110072 an InvalidOrder
        assert type(error) is (ccxt.ExchangeError if venue == "binance" else ccxt.InvalidOrder)
        assert ("-4116" if venue == "binance" else "110072") in str(error)


@VENUES
def test_hedge_mode_refuses_orders_without_a_side(venue):
    with FakeVenues(nodelay=True) as fake:
        fake.hedge_mode = True

        async def body(ex):
            if venue == "binance":
                assert (await ex.fetch_position_mode(BTC))["hedged"] is True
            refused = ccxt.OperationRejected if venue == "binance" else ccxt.BadRequest
            with pytest.raises(refused, match="-4061" if venue == "binance" else "position idx not match"):
                await place(ex, "vg-h1")
            await place(ex, "vg-h2", hedged=True)  # ccxt names the side: positionSide LONG / positionIdx 1
            [position] = await ex.fetch_positions([BTC])
            assert (position["side"], position["contracts"], position["hedged"]) == ("long", 0.5, True)
            fake.hedge_mode = False
            with pytest.raises(refused):  # the other way round too
                await place(ex, "vg-h3", hedged=True)
        run(fake, venue, body)
        assert list(fake.orders) == ["vg-h2"]


def test_bybit_positions_need_a_symbol_or_a_settle_coin():
    with FakeVenues(nodelay=True) as fake:
        fake.extra_positions["ETHUSDT"] = -2.0

        async def body(ex):
            [flat] = await ex.fetch_positions([BTC])
            assert flat["contracts"] == 0 and flat["info"]["side"] == ""
            await place(ex, "vg-p")
            [btc] = await ex.fetch_positions([BTC])
            assert (btc["symbol"], btc["side"], btc["contracts"], btc["hedged"]) == (BTC, "long", 0.5, False)
            both = await ex.fetch_positions(None, {"settleCoin": "USDT"})
            assert {(p["symbol"], p["side"], p["contracts"]) for p in both} == {(BTC, "long", 0.5),
                                                                                   (ETH, "short", 2.0)}
            with pytest.raises(ccxt.BadRequest, match="Either symbol or settleCoin is required"):
                await ex.private_get_v5_position_list({"category": "linear"})
            with pytest.raises(ccxt.ArgumentsRequired):  # refused by ccxt itself, before any request
                await ex.fetch_positions([BTC, ETH])
        run(fake, "bybit", body)


def test_a_bybit_trade_only_key_loads_markets_from_public_endpoints_only():
    with FakeVenues(nodelay=True) as fake:
        fake.bybit_trade_only = True

        async def body(ex):
            # ccxt asks /v5/asset/coin/query-info for currencies whenever a key is set, unless the client
            # says it has no such call (the "fetchCurrencies": False option is not read by bybit)
            assert BTC in await ex.load_markets()
            assert {p for p, _ in fake.requests} == {"/v5/market/instruments-info"}
            ex.has["fetchCurrencies"] = True
            with pytest.raises(ccxt.PermissionDenied):
                await ex.load_markets(reload=True)
            assert (await ex.private_get_v5_user_query_api())["result"]["permissions"]["Wallet"] == []
        run(fake, "bybit", body, load=False)
