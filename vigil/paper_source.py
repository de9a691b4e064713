"""The Source of paper mode: exchange streams and REST through ccxt.pro, and the HTTP feeds, on real public data."""
import asyncio
import collections
import logging
import os
import time

from vigil import schemas, venues
from vigil.candle_stream import CandleStream
from vigil.config import TIMEFRAME_MS
from vigil.http_feeds import FearGreed, Social, Wallets, WhaleAlert

log = logging.getLogger("vigil.paper")


async def _none():
    return None


class PaperSource:
    """Streams hold the candles and liquidations between cycles; each cycle fetches the rest concurrently."""

    def __init__(self, cfg):
        self.cfg = cfg
        m, f = cfg["market"], cfg["feeds"]
        self.symbols, self.trade_venue = m["symbols"], m["trade_venue"]
        self.timeout = f["timeout"]
        self.clients = {v: venues.client(cfg, v, self.timeout) for v in m["venues"]}  # streams and backfill
        self.polled = {v: venues.client(cfg, v, self.timeout, throttled=False) for v in f["funding_venues"]}
        bar_ms = TIMEFRAME_MS[m["timeframe"]]
        self.streams = [CandleStream(self.clients[v], v, s, venues.market_symbol(v, s), bar_ms, m["history"],
                                     m["stale_after"]) for v in m["venues"] for s in self.symbols]
        self.fear_greed = FearGreed(f["fear_greed_url"], self.timeout)
        key = os.environ.get(f["etherscan_key_env"], "")
        self.wallets = Wallets(f["etherscan_url"], key, f["wallets"], f["exchange_labels"], f["window_s"],
                               self.timeout) if key and f["wallets"] else None
        social_key = os.environ.get(f["social_key_env"], "")
        self.social = Social(f["social_url"], social_key, self.timeout) if social_key else None
        whale_key = os.environ.get(f["whale_alert_key_env"], "")
        self.whales = WhaleAlert(f["whale_alert_url"], whale_key, f["whale_alert_min_usd"], f["window_s"],
                                 self.timeout) if whale_key else None
        self.liquidations = collections.deque()  # (ts ms, symbol, long_usd, short_usd)
        self.liq_window_s = f["liquidation_window_s"]
        self.liq_errors = {}
        self.tasks = []

    async def start(self):
        self.tasks = [asyncio.create_task(s.run()) for s in self.streams]
        if "binance" in self.clients:  # one stream for every symbol
            self.tasks.append(asyncio.create_task(self._liquidations("binance", self.symbols)))
        if "bybit" in self.clients:  # one subscription per symbol
            self.tasks += [asyncio.create_task(self._liquidations("bybit", [s])) for s in self.symbols]

    async def close(self):
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.gather(*(ex.close() for ex in [*self.clients.values(), *self.polled.values()]),
                             return_exceptions=True)

    async def tick(self):
        return int(time.time() * 1000)

    def candles(self):
        data, stale = {}, []
        for s in self.streams:
            data.setdefault(s.venue, {})[s.symbol] = s.candles()
            why = s.health()
            if why and s.venue == self.trade_venue:
                stale.append(f"{s.symbol}@{s.venue} {why}")
        return schemas.feed(data, int(time.time() * 1000), "; ".join(stale) or None)

    def bar(self, venue, symbol):
        for s in self.streams:
            if s.venue == venue and s.symbol == symbol and len(s.candles()):
                return schemas.bar(s.candles()[-1])
        return None

    async def feeds(self, now):
        """Every request at once, each with its own timeout: one slow source never delays the others."""
        assets = [s.split("/")[0] for s in self.symbols]
        social = self._guard(self.social.fetch(assets)) if self.social else _none()
        funding, fng, onchain, social = await asyncio.gather(
            self._funding(), self._guard(self.fear_greed.fetch()), self._onchain(now), social)
        return {"funding": funding, "fear_greed": fng, "onchain": onchain,
                "social": social or schemas.feed(error="no social volume source configured (it needs a paid key)"),
                "liquidations": self._liquidation_feed(now)}

    async def _guard(self, coro):
        try:
            return schemas.feed(await asyncio.wait_for(coro, self.timeout), int(time.time() * 1000))
        except Exception as e:  # a feed fails alone, with its reason, and never raises into the cycle
            return schemas.feed(error=f"{type(e).__name__}: {str(e)[:200]}")

    async def _funding(self):
        """One bulk request per venue, all venues at once: the cost is one round trip, not one per symbol."""
        venues_ = self.cfg["feeds"]["funding_venues"]
        markets = [venues.swap_symbol(s) for s in self.symbols]
        answers = await asyncio.gather(*(self._guard(self.polled[v].fetch_funding_rates(markets)) for v in venues_))
        data, errors = {}, []
        for venue, answer in zip(venues_, answers):
            if not answer["ok"]:
                errors.append(f"{venue}: {answer['error']}")
                continue
            for symbol in self.symbols:
                rate = (answer["data"] or {}).get(venues.swap_symbol(symbol)) or {}
                next_ts = rate.get("nextFundingTimestamp") or rate.get("fundingTimestamp")
                if rate.get("fundingRate") is None or next_ts is None:
                    errors.append(f"{venue} {symbol}: no funding rate or time in the answer")
                    continue
                hours = float(str(rate.get("interval") or "8h").rstrip("h"))
                data.setdefault(symbol, {})[venue] = {"rate": float(rate["fundingRate"]), "interval_h": hours,
                                                      "next_ts": int(next_ts),
                                                      "mark": float(rate.get("markPrice") or 0)}
        feed = schemas.feed(data, int(time.time() * 1000),
                            None if data else "; ".join(errors) or "no funding data")
        feed["partial"] = errors  # what failed while the rest answered
        return feed

    async def _onchain(self, now):
        """Tracked wallets and Whale Alert together; either one answering is enough, failures are named."""
        if self.wallets is None and self.whales is None:
            return schemas.feed(error="no on-chain source configured (an Etherscan key with wallets, "
                                      "or a Whale Alert key)")
        eth = self.bar(self.trade_venue, "ETH/USDT")
        parts = await asyncio.gather(
            self._guard(self.wallets.fetch(now, eth["close"] if eth else None)) if self.wallets else _none(),
            self._guard(self.whales.fetch(now)) if self.whales else _none())
        answered = [p for p in parts if p and p["ok"]]
        errors = [f"{name}: {p['error']}" for name, p in zip(("etherscan", "whale alert"), parts)
                  if p and not p["ok"]]
        if not answered:
            return schemas.feed(error="; ".join(errors))
        transfers = sorted((t for p in answered for t in p["data"]), key=lambda t: t["ts"])
        feed = schemas.feed({"window_s": self.cfg["feeds"]["window_s"], "transfers": transfers},
                            int(time.time() * 1000))
        feed["partial"] = errors
        return feed

    async def _liquidations(self, venue, symbols):
        ex = self.clients[venue]
        markets = [venues.swap_symbol(s) for s in symbols]
        backoff = 1.0
        while True:
            try:
                if len(markets) == 1:
                    batch = await ex.watch_liquidations(markets[0])
                else:
                    batch = await ex.watch_liquidations_for_symbols(markets)
                for liq in batch:
                    usd = float(liq["contracts"] or 0) * float(liq.get("contractSize") or 1) * float(liq["price"])
                    long_usd = usd if _long_liquidated(venue, liq["info"]) else 0.0
                    self.liquidations.append((liq["timestamp"], liq["symbol"].split(":")[0], long_usd, usd - long_usd))
                self.liq_errors.pop((venue, tuple(symbols)), None)
                backoff = 1.0
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self.liq_errors[(venue, tuple(symbols))] = f"{type(e).__name__}: {str(e)[:200]}"
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    def _liquidation_feed(self, now):
        cutoff = now - self.liq_window_s * 1000
        while self.liquidations and self.liquidations[0][0] < cutoff:
            self.liquidations.popleft()
        if self.liq_errors:
            return schemas.feed(error="; ".join(f"{v} {','.join(s)}: {e}" for (v, s), e in self.liq_errors.items()))
        data = {s: {"long_usd": 0.0, "short_usd": 0.0, "window_s": self.liq_window_s} for s in self.symbols}
        for _, symbol, long_usd, short_usd in self.liquidations:
            if symbol in data:
                data[symbol]["long_usd"] += long_usd
                data[symbol]["short_usd"] += short_usd
        return schemas.feed(data, now)


def _long_liquidated(venue, info):
    """Binance reports the forced order's side (SELL closes a long); Bybit the position's side (Buy = a long)."""
    side = str(info.get("S", "")).lower()
    return side == "sell" if venue == "binance" else side == "buy"


async def probe(cfg):
    """[(source, milliseconds, error or None)] for every configured source, all asked at once."""
    source = PaperSource(cfg)
    symbol = venues.swap_symbol(cfg["market"]["symbols"][0])

    async def timed(name, coro):
        t = time.perf_counter()
        try:
            await asyncio.wait_for(coro, source.timeout * 2)
            return name, (time.perf_counter() - t) * 1000, None
        except Exception as e:
            return name, (time.perf_counter() - t) * 1000, f"{type(e).__name__}: {str(e)[:150]}"

    async def candles(v, ex):
        await ex.load_markets()
        market = venues.market_symbol(v, cfg["market"]["symbols"][0])
        if not await ex.fetch_ohlcv(market, cfg["market"]["timeframe"], limit=2):
            raise ValueError("no candles in the answer")

    async def funding(ex):
        await ex.load_markets()
        if ((await ex.fetch_funding_rates([symbol])).get(symbol) or {}).get("fundingRate") is None:
            raise ValueError("no funding rate in the answer")
    checks = [timed(f"{v} candles", candles(v, ex)) for v, ex in source.clients.items()]
    checks += [timed(f"{v} funding", funding(ex)) for v, ex in source.polled.items()]
    checks.append(timed("fear & greed (alternative.me)", source.fear_greed.fetch()))
    if source.wallets:
        checks.append(timed("etherscan wallets", source.wallets.fetch(int(time.time() * 1000), 1.0)))
    if source.whales:
        checks.append(timed("whale alert", source.whales.fetch(int(time.time() * 1000))))
    if source.social:
        checks.append(timed("social volume (lunarcrush)",
                            source.social.fetch([s.split("/")[0] for s in cfg["market"]["symbols"]])))
    try:
        rows = list(await asyncio.gather(*checks))
    finally:
        await source.close()
    if not source.wallets:
        rows.append(("etherscan wallets", 0.0, "skipped: needs a key and tracked wallets"))
    if not source.whales:
        rows.append(("whale alert", 0.0, "skipped: needs a key"))
    if not source.social:
        rows.append(("social volume", 0.0, "skipped: needs a key"))
    return rows
