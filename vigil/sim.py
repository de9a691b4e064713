"""Simulates an exchange: a seeded market (candles, funding, whale flows, sentiment) one bar per tick, and a broker
that fills orders against the latest closed bars with fees, size-dependent slippage and partial fills."""
import collections

import numpy as np

from vigil import schemas
from vigil.config import TIMEFRAME_MS
from vigil.schemas import CLOSE, ORDER_WORKING


START_PRICE = {"BTC": 42000.0, "ETH": 2300.0, "SOL": 100.0, "BNB": 310.0, "XRP": 0.6}
# regime -> (drift per bar, volatility per bar, mean bars spent in it)
REGIMES = {"up": (0.0004, 0.0009, 200), "down": (-0.0004, 0.0009, 200),
           "range": (0.0, 0.0007, 360), "volatile": (0.0, 0.0045, 70)}
NEXT = {"up": ("range", "volatile", "down"), "down": ("range", "volatile", "up"),
        "range": ("up", "down", "volatile"), "volatile": ("range", "up", "down")}
FUNDING_HOURS = (8.0, 4.0, 8.0)  # per venue in order: venues settle on different schedules
EXCHANGE_WALLETS = ("binance-hot-1", "bybit-hot-1", "coinbase-hot-2")
WHALE_WINDOW_S = 3600
LIQ_WINDOW_BARS = 5


class SimMarket:
    """The Source of mode sim: deterministic from [sim] seed, time is the bars' own clock."""

    def __init__(self, cfg):
        self.venues = cfg["market"]["venues"]
        self.symbols = cfg["market"]["symbols"]
        self.history = cfg["market"]["history"]
        self.bar_ms = TIMEFRAME_MS[cfg["market"]["timeframe"]]
        self.fng_every = cfg["sim"]["fng_every"]
        self.rng = np.random.default_rng(cfg["sim"]["seed"])
        n = len(self.symbols)
        rng = self.rng
        self.assets = [s.split("/")[0] for s in self.symbols]
        self.price = np.array([START_PRICE.get(a, float(rng.uniform(1, 500))) for a in self.assets])
        self.anchor = self.price.copy()
        self.regime = [str(rng.choice(list(REGIMES))) for _ in range(n)]
        self.left = [int(rng.geometric(1 / REGIMES[r][2])) for r in self.regime]
        self.flow_drift = np.zeros(n)  # price pressure after coordinated whale flows
        self.flow_left = np.zeros(n, int)
        self.basis = np.zeros(len(self.venues))
        self.base_volume = 2e7 / self.price  # about 20 million USD per bar, like a liquid perpetual
        self.funding = np.full((len(self.venues), n), 0.0001)
        self.funding_push = np.zeros((len(self.venues), n))
        self.fng = 50.0
        self.social = np.ones(n)
        self.transfers = collections.deque()
        self.transfer_seq = 0
        self.burst = {}  # asset index -> (flow, transfers left)
        self.liq = collections.deque(maxlen=LIQ_WINDOW_BARS)
        cap = self.history + 1024
        self.buf = np.zeros((len(self.venues), n, cap, 6))
        self.rows = 0
        self.ts = cfg["sim"]["start_time"] - self.history * self.bar_ms
        for _ in range(self.history):  # warm-up: strategies can run from the first cycle
            self._bar()

    async def start(self):
        pass

    async def close(self):
        pass

    async def tick(self):
        self._bar()
        return self.ts

    def candles(self):
        lo = max(0, self.rows - self.history)
        data = {v: {s: self.buf[i, j, lo:self.rows] for j, s in enumerate(self.symbols)}
                for i, v in enumerate(self.venues)}
        return schemas.feed(data, self.ts)

    def bar(self, venue, symbol):
        if venue not in self.venues or symbol not in self.symbols or not self.rows:
            return None
        return schemas.bar(self.buf[self.venues.index(venue), self.symbols.index(symbol), self.rows - 1])

    async def feeds(self, now):
        def feed(data):
            return schemas.feed(data, self.ts)
        funding = {}
        for j, s in enumerate(self.symbols):
            funding[s] = {}
            for i, v in enumerate(self.venues):
                hours = FUNDING_HOURS[i % len(FUNDING_HOURS)]
                step = int(hours * 3_600_000)
                funding[s][v] = {"rate": round(float(self.funding[i, j]), 8), "interval_h": hours,
                                 "next_ts": (self.ts // step + 1) * step,
                                 "mark": float(self.buf[i, j, self.rows - 1, CLOSE])}
        liq = {s: {"long_usd": float(sum(x[j][0] for x in self.liq)),
                   "short_usd": float(sum(x[j][1] for x in self.liq)),
                   "window_s": LIQ_WINDOW_BARS * self.bar_ms // 1000} for j, s in enumerate(self.symbols)}
        return {
            "funding": feed(funding),
            "onchain": feed({"window_s": WHALE_WINDOW_S, "transfers": [dict(t) for t in self.transfers]}),
            "fear_greed": feed({"value": int(round(self.fng)), "label": _fng_label(self.fng), "ts": self.ts}),
            "social": feed({a: {"volume": round(float(1000 * self.social[j]), 2), "baseline": 1000.0}
                            for j, a in enumerate(self.assets)}),
            "liquidations": feed(liq),
        }

    # --- the generator -----------------------------------------------------------------------
    def _bar(self):
        rng, n = self.rng, len(self.symbols)
        self.ts += self.bar_ms
        drift = np.array([REGIMES[r][0] for r in self.regime]) + self.flow_drift * (self.flow_left > 0)
        vol = np.array([REGIMES[r][1] for r in self.regime])
        shocks = np.where([r == "volatile" for r in self.regime], rng.standard_t(3, n) / np.sqrt(3),
                          rng.standard_normal(n))
        revert = np.where([r == "range" for r in self.regime], -0.15 * np.log(self.price / self.anchor), 0.0)
        ret = drift + revert + vol * shocks
        opens = self.price
        closes = opens * np.exp(ret)
        wick = np.abs(rng.standard_normal((2, n))) * vol * 0.6
        highs = np.maximum(opens, closes) * (1 + wick[0])
        lows = np.minimum(opens, closes) * (1 - wick[1])
        surprise = np.abs(ret) / vol
        volume = self.base_volume * rng.lognormal(0, 0.35, n) * (1 + 0.8 * np.maximum(surprise - 1, 0))
        volume *= np.where([r == "volatile" for r in self.regime], 2.5, 1.0)
        self.basis = 0.9 * self.basis + rng.normal(0, 0.00005, len(self.venues))
        self.basis[0] = 0.0  # the first venue is the reference price
        self._append(opens, highs, lows, closes, volume)
        self.price = closes
        self._regimes()
        self._funding()
        self._whales()
        self._sentiment(ret, vol, volume * closes)

    def _append(self, opens, highs, lows, closes, volume):
        if self.rows == self.buf.shape[2]:  # compact: keep the last `history` rows at the front
            keep = self.history - 1
            self.buf[:, :, :keep] = self.buf[:, :, self.rows - keep:self.rows]
            self.rows = keep
        for i in range(len(self.venues)):
            k = 1 + self.basis[i]
            share = 1.0 if i == 0 else 0.6
            self.buf[i, :, self.rows] = np.column_stack(
                (np.full(len(opens), self.ts - self.bar_ms), opens * k, highs * k, lows * k, closes * k,
                 volume * share))
        self.rows += 1

    def _regimes(self):
        for j in range(len(self.symbols)):
            self.left[j] -= 1
            if self.left[j] <= 0:
                self.regime[j] = str(self.rng.choice(NEXT[self.regime[j]]))
                self.left[j] = int(self.rng.geometric(1 / REGIMES[self.regime[j]][2]))
                self.anchor[j] = self.price[j]
        self.flow_left = np.maximum(self.flow_left - 1, 0)

    def _funding(self):
        rng = self.rng
        # Rates mean-revert to 0.01% per interval; now and then one venue diverges for hours.
        self.funding += 0.01 * (0.0001 + self.funding_push - self.funding) + rng.normal(0, 0.000004,
                                                                                        self.funding.shape)
        if rng.random() < 0.004:
            i, j = rng.integers(len(self.venues)), rng.integers(len(self.symbols))
            self.funding_push[i, j] = rng.choice([-1, 1]) * rng.uniform(0.0006, 0.0015)
        self.funding_push *= 0.998

    def _whales(self):
        rng, n = self.rng, len(self.symbols)
        cutoff = self.ts - WHALE_WINDOW_S * 1000
        while self.transfers and self.transfers[0]["ts"] < cutoff:
            self.transfers.popleft()
        if rng.random() < 0.003 and len(self.burst) < n:
            j = int(rng.integers(n))
            self.burst.setdefault(j, (str(rng.choice(["inflow", "outflow"])), int(rng.integers(4, 9))))
        for j, (flow, left) in list(self.burst.items()):
            if rng.random() < 0.15:
                self._transfer(j, flow, float(rng.uniform(5e6, 4e7)))
                left -= 1
                if left == 0:
                    del self.burst[j]
                    # Coordinated flows move the price afterwards: inflows (selling) push it down.
                    self.flow_drift[j] = (-1 if flow == "inflow" else 1) * 0.0008
                    self.flow_left[j] = int(rng.integers(60, 180))
                else:
                    self.burst[j] = (flow, left)
        if rng.random() < 0.08:
            self._transfer(int(rng.integers(n)), str(rng.choice(["inflow", "outflow", "wallet"])),
                           float(rng.pareto(1.5) * 2e5 + 1e5))

    def _transfer(self, j, flow, usd):
        self.transfer_seq += 1
        wallet = f"0x{self.rng.integers(16 ** 8):08x}"
        exchange = str(self.rng.choice(EXCHANGE_WALLETS))
        src, dst = {"inflow": (wallet, exchange), "outflow": (exchange, wallet)}.get(
            flow, (wallet, f"0x{self.rng.integers(16 ** 8):08x}"))
        self.transfers.append({"id": f"sim-{self.transfer_seq}", "ts": self.ts, "asset": self.assets[j],
                               "usd": round(usd, 2), "from": src, "to": dst, "flow": flow})

    def _sentiment(self, ret, vol, usd_volume):
        rng = self.rng
        if (self.ts // self.bar_ms) % self.fng_every == 0:
            shock = rng.normal(0, 35) if rng.random() < 0.07 else 0.0
            self.fng = float(np.clip(self.fng + 0.05 * (50 - self.fng) + rng.normal(0, 5) + shock, 0, 100))
        self.social = 0.95 * self.social + 0.05 * (1 + 2 * (np.abs(ret) / vol > 2.5)) + \
            rng.normal(0, 0.01, len(self.social))
        moved = np.abs(ret) / 0.003
        forced = np.where(moved > 1, usd_volume * 0.03 * (moved - 1) ** 2, usd_volume * 0.001)
        self.liq.append([(f if r < 0 else 0.0, f if r > 0 else 0.0) for f, r in zip(forced, ret)])


def _fng_label(v):
    for limit, label in ((25, "Extreme Fear"), (45, "Fear"), (56, "Neutral"), (76, "Greed")):
        if v < limit:
            return label
    return "Extreme Greed"


def simulate(order, bar, params):
    """Returns a Fill for what the bar can absorb, or None when nothing fills (IOC: the rest is dropped)."""
    if not bar or bar["volume"] <= 0:
        return None
    qty = min(order["qty"], params["max_participation"] * bar["volume"])
    if qty <= 0:
        return None
    buy = order["side"] == "buy"
    base = bar["close"]
    if order["type"] != "market":
        # A stop or target the bar crossed: it fills there, or at the open when the bar gapped past it
        # (worse for a stop, better for a target), then slips like any market order.
        worse = (order["type"] == "stop") == (not buy)
        base = (min if worse else max)(bar["open"], order["price"])
    # Square-root impact law: slippage grows with the square root of the bar volume share taken.
    slip = params["slippage_bps"] / 1e4 + params["impact"] * (qty / bar["volume"]) ** 0.5
    price = base * (1 + slip if buy else 1 - slip)
    fee = qty * price * params["taker_fee"]
    return {"order_id": order["id"], "venue": order["venue"], "symbol": order["symbol"],
            "side": order["side"], "qty": qty, "price": price, "fee": fee,
            "fee_ccy": "USDT", "fee_usdt": fee, "liquidity": "taker", "ts": int(bar["ts"])}


class SimBroker:
    """Same interface as the live broker: place, resolve and cancel an order -> (order, fills).

    A venue stop rests here as it would at the venue: it fills in the first bar after it was placed whose range
    reaches its price, at that price or at the bar's open when the bar gapped through it. An order a crash kept
    from an answer (still pending) never reached the simulated venue.
    """

    alarm = None  # nothing here ever needs trading halted

    def __init__(self, source, params):
        self.source = source
        self.params = params

    async def place(self, order):
        if order["type"] == "venue_stop":
            return dict(order, status="open"), []
        return self._fill(order, order)

    async def resolve(self, order):
        if order["type"] != "venue_stop" or order["status"] == "pending":
            # a simulated order that never got an answer was never filled: the fill model keeps no state
            return dict(order, status="cancelled", error="no answer before restart"), []
        bar = self.source.bar(order["venue"], order["symbol"])
        if not bar or bar["ts"] < order["created_at"] or not (
                bar["low"] <= order["price"] if order["side"] == "sell" else bar["high"] >= order["price"]):
            return order, []
        return self._fill(order, dict(order, type="stop"))

    async def cancel(self, order):
        """A stop the latest bar reached has fired before the cancel arrives, as it would have at the venue."""
        answer, fills = await self.resolve(order)
        if answer["status"] in ORDER_WORKING:
            answer = dict(answer, status="cancelled")
        return answer, fills

    def _fill(self, order, how):
        bar = self.source.bar(order["venue"], order["symbol"])
        fill = simulate(how, bar, self.params) if bar else None
        order = dict(order)
        if fill is None:
            order.update(status="rejected", error="no liquidity in the bar" if bar else "no price")
            return order, []
        fill["order_id"] = fill["trade_id"] = order["id"]  # one fill per order: the order id is its trade id
        order.update(filled=fill["qty"], avg_price=fill["price"], fee=fill["fee"], fee_ccy=fill["fee_ccy"],
                     status="filled" if fill["qty"] >= order["qty"] else "partial")
        return order, [fill]
