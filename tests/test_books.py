"""The books equal the exchange after any sequence of late, partial, duplicate, lagging and failed answers and crashes."""
import asyncio
import collections

from hypothesis import HealthCheck, given, settings, strategies as st

from fake_venue import FakeVenues
from vigil import schemas, venues
from vigil.executor import Executor
from vigil.live_broker import LiveBroker
from vigil.storage import Storage

NOW = 1_700_000_000_000
FAULTS = st.sampled_from([None, None, None, "new", "partial", "partial_then_fill", "partial_then_expire", "lag",
                          (503, "lag"), ("new", "lag"), "timeout", "garbage", "reject", 429])
CRASHES = st.sampled_from([None, None, None, "before_send", "after_send"])
STEPS = st.lists(st.one_of(
    st.tuples(st.just("open"), st.sampled_from(["binance", "bybit", "spread"]), st.sampled_from(["BTC", "ETH"]),
              FAULTS, FAULTS, CRASHES),
    st.tuples(st.just("close"), st.integers(0, 3), FAULTS, CRASHES),
    st.tuples(st.just("cycle"), st.booleans()),  # a minute passes; the venue may finish its working orders
    st.tuples(st.just("duplicates"), st.booleans()),  # the venues start or stop listing every trade twice
    # how many lookups a working order takes to move on, and a lagging lookup to find it: beyond one
    # call's patience (about five lookups) the order is carried to later cycles
    st.tuples(st.just("pace"), st.sampled_from([1, 3, 8, 20]), st.sampled_from([0, 2, 8])),
), min_size=1, max_size=12)


class Crash(BaseException):
    """The process dies here: nothing after it runs, an open transaction is rolled back."""


class VirtualTime:
    def __init__(self):
        self.t = NOW / 1000

    def time(self):
        return self.t

    async def sleep(self, seconds):
        self.t += seconds
        await asyncio.sleep(0)


class CrashingBroker:
    """The live broker, dying once just before an order leaves or just after the venue took it."""

    def __init__(self, inner, crash):
        self.inner, self.crash = inner, crash

    @property
    def alarm(self):
        return self.inner.alarm

    async def place(self, order):
        if self.crash == "before_send":
            raise Crash()
        answer = await self.inner.place(order)
        if self.crash == "after_send":
            raise Crash()
        return answer

    async def resolve(self, order, known=None):
        return await self.inner.resolve(order, known)


def trade(cycle, venue, base, qty=0.5):
    symbol = f"{base}/USDT"
    pairs = [("binance", "buy"), ("bybit", "sell")] if venue == "spread" else [(venue, "buy")]
    legs = [{"venue": v, "symbol": symbol, "side": side, "market": "swap", "qty": qty, "price": 100.0,
             "notional": 100.0 * qty} for v, side in pairs]
    proposal = {"id": f"{cycle}:s:{symbol}:open", "strategy": "s", "symbol": symbol, "side": "buy",
                "kind": "spread" if venue == "spread" else "directional", "intent": "open", "position_id": None,
                "legs": [{k: leg[k] for k in ("venue", "symbol", "side", "market")} for leg in legs],
                "confidence": 1.0, "entry": 100.0, "stop": None, "target": None, "max_hold_s": 0,
                "reason": "property test", "created_at": NOW}
    return {"proposal": proposal, "legs": legs, "checks": []}


async def play(steps, path, fakes):
    clients = {}
    for venue, fake in fakes.items():
        clients[venue] = venues.client({f"venue.{venue}": {"rest_url": fake.url, "ws_url": ""}}, venue, 5.0,
                                       throttled=False)
        clients[venue].apiKey, clients[venue].secret = fake.api_key, fake.secret
    clock = VirtualTime()
    live = LiveBroker(clients)
    live.clock, live.sleep = clock.time, clock.sleep
    db = Storage(path)
    broker = CrashingBroker(live, None)
    executor = Executor(db, broker, lambda: False)
    try:
        for cycle, step in enumerate(steps, 1):
            now = NOW + cycle * 60_000
            for fake in fakes.values():
                fake.order_faults = []
            if step[0] == "open":
                _, venue, base, first, second, crash = step
                order_of = ["binance", "bybit"] if venue == "spread" else [venue]
                for v, fault in zip(order_of, (first, second)):
                    fakes[v].order_faults = [fault]
                act = lambda: executor.open(trade(cycle, venue, base), cycle, now)  # noqa: E731
            elif step[0] == "close":
                _, pick, fault, crash = step
                held = db.positions("open", "closing")
                if not held:
                    continue
                position = held[pick % len(held)]
                for fake in fakes.values():
                    fake.order_faults = [fault]
                act = lambda: executor.close(position, cycle, now, "test")  # noqa: E731
            elif step[0] == "cycle":
                clock.t += 60
                if step[1]:
                    for fake in fakes.values():
                        fake.settle_all()
                await executor.follow(cycle, now)
                continue
            elif step[0] == "duplicates":
                for fake in fakes.values():
                    fake.duplicate_trades = step[1]
                continue
            else:
                for fake in fakes.values():
                    fake.fill_after_lookups, fake.lag_lookups = step[1], step[2]
                continue
            broker.crash = crash
            try:
                await act()
            except Crash:
                # the restart: a new process on the same database recovers, then replays the cycle it died in
                broker.crash = None
                db.close()
                db = executor.db = Storage(path)
                await executor.recover(cycle, now)
                if step[0] == "open":
                    await act()
        for _ in range(40):  # time passes: every working order reaches its end and is booked
            if not db.orders(statuses=schemas.ORDER_WORKING):
                break
            clock.t += 60
            for fake in fakes.values():
                fake.settle_all()
            await executor.follow(len(steps) + 1, NOW)
        return db
    finally:
        for ex in clients.values():
            await ex.close()


def check_books(db, fakes):
    assert not db.orders(statuses=schemas.ORDER_WORKING)
    orders = {o["id"]: o for o in db.orders()}
    booked = collections.defaultdict(float)  # (position, leg, exit) -> filled quantity
    by_order = collections.defaultdict(float)
    for f in db.fills():
        o = orders[f["order_id"]]
        booked[(o["position_id"], o["leg"], o["reduce_only"])] += f["qty"]
        by_order[o["id"]] += f["qty"]
    held = collections.defaultdict(float)  # (venue, exchange symbol) -> what the books hold
    for p in db.positions():
        for i, leg in enumerate(p["legs"]):
            # a position's quantity is the sum of its fills
            assert abs(leg["qty"] - (booked[(p["id"], i, False)] - booked[(p["id"], i, True)])) < 1e-9, p
            if p["status"] in schemas.POSITION_LIVE:
                held[(leg["venue"], leg["symbol"].replace("/", ""))] += leg["qty"] * (1 if leg["side"] == "buy" else -1)
        assert p["status"] != "closed" or all(abs(leg["qty"]) < 1e-9 for leg in p["legs"])
    for venue, fake in fakes.items():
        for symbol, qty in fake.net_positions().items():
            assert abs(held[(venue, symbol)] - qty) < 1e-9, (venue, symbol, held[(venue, symbol)], qty)
        for cid, o in fake.orders.items():
            # every trade the venue made is booked once, and the order's row says what the venue says
            assert abs(by_order[cid] - float(o["executedQty"])) < 1e-9, (cid, o["executedQty"], by_order[cid])
            assert abs(orders[cid]["filled"] - float(o["executedQty"])) < 1e-9
        assert not fake.duplicate_posts, fake.duplicate_posts  # no client id reached the venue twice


@settings(max_examples=40, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(STEPS)
def test_books_equal_the_exchange_after_any_sequence(tmp_path_factory, steps):
    path = str(tmp_path_factory.mktemp("books") / "v.db")
    with FakeVenues(nodelay=True) as binance, FakeVenues(nodelay=True) as bybit:
        fakes = {"binance": binance, "bybit": bybit}
        db = asyncio.run(play(steps, path, fakes))
        try:
            check_books(db, fakes)
        finally:
            db.close()
