"""The Source of paper and live mode, on real public data: closed candles kept current from ccxt.pro kline streams
(gaps backfilled over REST), funding through ccxt, and the plain-HTTP feeds."""
import asyncio
import collections
import functools
import json
import logging
import os
import time
import urllib.parse
import urllib.request

import numpy as np

from vigil import schemas, venues
from vigil.config import TIMEFRAME_MS
from vigil.schemas import TS


log = logging.getLogger("vigil.paper")


async def _none():
    return None


class PaperSource:
    """Streams hold the candles and liquidations between cycles; each cycle fetches the rest concurrently."""

    wall_clock = True  # its cycles follow real candle closes

    def __init__(self, cfg, clock=time.time):
        self.cfg = cfg
        self.clock = clock  # the orchestrator's clock: a candle closes on it
        m, f = cfg["market"], cfg["feeds"]
        self.symbols, self.trade_venue = m["symbols"], m["trade_venue"]
        self.timeout = f["timeout"]
        self.clients = {v: venues.client(cfg, v, self.timeout) for v in m["venues"]}  # streams and backfill
        for ex in self.clients.values():
            # ccxt keeps each stream's last 1000 bars; the streams read every update, a few suffice (bench/scale.py:
            # resident memory grew 12 MB in 100 cycles with 1000, not at all with 10)
            ex.options["OHLCVLimit"] = 10
        self.polled = {v: venues.client(cfg, v, self.timeout, throttled=False) for v in f["funding_venues"]}
        bar_ms = self.bar_ms = TIMEFRAME_MS[m["timeframe"]]
        self.streams = [CandleStream(self.clients[v], v, s, venues.market_symbol(v, s), bar_ms, m["history"],
                                     m["stale_after"], clock) for v in m["venues"] for s in self.symbols]
        # a dict, not a scan of the streams: the cycle's 900 bar lookups (bench/scale.py) put its compute median at
        # 70 ms with a scan, 59-64 ms with this
        self.by_key = {(s.venue, s.symbol): s for s in self.streams}
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
        self.funding = None  # the funding answer tick() asked for, until feeds() takes it

    async def start(self):
        batch = venues.SUBSCRIBE_BATCH
        for venue, ex in self.clients.items():  # a venue's streams share one connection and reconnect together
            streams = [s for s in self.streams if s.venue == venue]
            pairs = [[s.market_symbol, s.timeframe] for s in streams]
            self.tasks.append(asyncio.create_task(_reconnecting(
                f"{venue} candle streams", ex,
                [functools.partial(ex.watch_ohlcv_for_symbols, c) for c in _chunks(pairs, batch[venue])],
                [s.follow for s in streams], functools.partial(_failed, streams))))
        markets = [venues.swap_symbol(s) for s in self.symbols]
        if "binance" in self.clients:  # one call per request's worth of symbols
            ex = self.clients["binance"]
            follow = [functools.partial(self._liquidations, "binance", functools.partial(
                ex.watch_liquidations_for_symbols, c)) for c in _chunks(markets, batch["binance"])]
            self.tasks.append(asyncio.create_task(_reconnecting(
                "binance liquidations", ex, [], follow, lambda error: self.liq_errors.update(binance=error))))
        if "bybit" in self.clients:  # one call per symbol, subscribed in batches beforehand
            ex = self.clients["bybit"]
            follow = [functools.partial(self._liquidations, "bybit", functools.partial(ex.watch_liquidations, m))
                      for m in markets]
            self.tasks.append(asyncio.create_task(_reconnecting(
                "bybit liquidations", ex,
                [functools.partial(_bybit_liquidations, ex, c) for c in _chunks(markets, batch["bybit"])],
                follow, lambda error: self.liq_errors.update(bybit=error))))

    async def close(self):
        if self.funding:  # asked by a tick whose cycle never read it
            self.tasks.append(self.funding)
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.gather(*(ex.close() for ex in [*self.clients.values(), *self.polled.values()]),
                             return_exceptions=True)

    async def tick(self):
        """The wall clock, once every trade-venue stream holds the candle that closed last, or after wait_s (a late
        stream says so in the candle feed's health, and its strategies decide without that candle)."""
        now = self.clock()
        # funding does not wait for the candle: asked now, its round trip overlaps the wait (bench/scale.py's data
        # step median: 1.35-1.52 round trips asked after it, 1.29-1.31 asked here)
        self.funding = asyncio.ensure_future(self._funding())
        expected = (int(now * 1000) // self.bar_ms - 1) * self.bar_ms  # the open time of the candle just closed
        deadline = now + self.cfg["vigil"]["settle_s"] + 2.0  # what WebSocket delivery takes at its worst
        # only a stream one candle behind is waited for: one further behind is stale, not late, and says so
        while self.clock() < deadline and any(s.venue == self.trade_venue and len(s.candles())
                                             and s.candles()[-1, TS] == expected - self.bar_ms for s in self.streams):
            await asyncio.sleep(0.02)
        return int(self.clock() * 1000)

    def candles(self):
        data, stale = {}, []
        for s in self.streams:
            data.setdefault(s.venue, {})[s.symbol] = s.candles()
            why = s.health()
            if why and s.venue == self.trade_venue:
                stale.append(f"{s.symbol}@{s.venue} {why}")
        return schemas.feed(data, int(self.clock() * 1000), "; ".join(stale) or None)

    def bar(self, venue, symbol):
        s = self.by_key.get((venue, symbol))
        return schemas.bar(s.candles()[-1]) if s and len(s.candles()) else None

    async def feeds(self, now):
        """Every request at once, each with its own timeout: one slow source never delays the others."""
        assets = [s.split("/")[0] for s in self.symbols]
        social = self._guard(self.social.fetch(assets)) if self.social else _none()
        funding, self.funding = self.funding or self._funding(), None  # asked by tick() already, if it ran
        funding, fng, onchain, social = await asyncio.gather(
            funding, self._guard(self.fear_greed.fetch()), self._onchain(now), social)
        return {"funding": funding, "fear_greed": fng, "onchain": onchain,
                "social": social or schemas.feed(error="no social volume source configured (it needs a paid key)"),
                "liquidations": self._liquidation_feed(now)}

    async def _guard(self, coro):
        try:
            return schemas.feed(await asyncio.wait_for(coro, self.timeout), int(self.clock() * 1000))
        except Exception as e:  # a feed fails alone, with its reason, and never raises into the cycle
            return schemas.feed(error=f"{type(e).__name__}: {str(e)[:200]}")

    async def _funding(self):
        """One bulk request per venue, all venues at once: the cost is one round trip, not one per symbol."""
        venues_ = self.cfg["feeds"]["funding_venues"]
        markets = [venues.swap_symbol(s) for s in self.symbols]
        answers = await asyncio.gather(*(self._guard(self._rates(v, markets)) for v in venues_))
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
        feed = schemas.feed(data, int(self.clock() * 1000),
                            None if data else "; ".join(errors) or "no funding data")
        feed["partial"] = errors  # what failed while the rest answered
        return feed

    async def _rates(self, venue, markets):
        ex = self.polled[venue]
        if ex.markets is None and venue in self.clients:
            # one copy of a venue's markets, the streams': 8 MB less at bench/scale.py's 300 symbols x 3 venues
            await self.clients[venue].load_markets()
            ex.set_markets_from_exchange(self.clients[venue])
        return await ex.fetch_funding_rates(markets)

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
                            int(self.clock() * 1000))
        feed["partial"] = errors
        return feed

    async def _liquidations(self, venue, watch):
        """Books what each watch() returns, split into longs and shorts liquidated."""
        while True:
            for liq in await watch():
                usd = float(liq["contracts"] or 0) * float(liq.get("contractSize") or 1) * float(liq["price"])
                long_usd = usd if _long_liquidated(venue, liq["info"]) else 0.0
                self.liquidations.append((liq["timestamp"], liq["symbol"].split(":")[0], long_usd, usd - long_usd))
            self.liq_errors.pop(venue, None)

    def _liquidation_feed(self, now):
        cutoff = now - self.liq_window_s * 1000
        while self.liquidations and self.liquidations[0][0] < cutoff:
            self.liquidations.popleft()
        if self.liq_errors:
            return schemas.feed(error="; ".join(f"{v}: {e}" for v, e in self.liq_errors.items()))
        data = {s: {"long_usd": 0.0, "short_usd": 0.0, "window_s": self.liq_window_s} for s in self.symbols}
        for _, symbol, long_usd, short_usd in self.liquidations:
            if symbol in data:
                data[symbol]["long_usd"] += long_usd
                data[symbol]["short_usd"] += short_usd
        return schemas.feed(data, now)


async def _reconnecting(what, ex, subscriptions, followers, failed):
    """Sends the subscriptions (one request each), then runs every follower until one fails; the failure goes to
    failed(error), and after a pause (doubling from 1 s to 30 s) all start again: they share the connection, and
    losing it fails them all anyway."""
    backoff = 1.0
    while True:
        began = time.monotonic()
        try:
            await ex.load_markets()
            for subscribe in subscriptions:
                await _subscribe(subscribe())
            async with asyncio.TaskGroup() as group:
                for follow in followers:
                    group.create_task(follow())
        except asyncio.CancelledError:
            raise
        except Exception as e:
            while isinstance(e, ExceptionGroup):
                e = e.exceptions[0]
            error = f"{type(e).__name__}: {str(e)[:200]}"
            failed(error)
            log.warning("%s: %s; reconnecting in %.0fs", what, error, backoff)
            if time.monotonic() - began > 60:  # it had worked for a while: a fresh failure, not a repeated one
                backoff = 1.0
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)


async def _subscribe(watch):
    """Runs a batched watch call as far as its subscribe request, then drops it: the one-symbol watch calls that
    follow find their topics subscribed and send no request of their own."""
    task = asyncio.ensure_future(watch)
    await asyncio.sleep(0)  # ccxt registers the topics and queues the request before its first wait
    if task.done():
        task.result()  # refused at once (an unknown symbol, too many topics): the error is the streams'
    task.cancel()


async def _bybit_liquidations(ex, markets):
    """ccxt's Bybit watches liquidations one symbol at a time: this is that call's subscription (its topic and
    message names) for many symbols in one request."""
    url = await ex.get_url_by_market_type(markets[0], False, "watchLiquidations")
    return await ex.watch_topics(url, [f"liquidations::{m}" for m in markets],
                                 [f"allLiquidation.{ex.market(m)['id']}" for m in markets])


def _chunks(items, size):
    return [items[i:i + size] for i in range(0, len(items), size)]


def _failed(streams, error):
    for s in streams:
        s.error, s.reconnects = error, s.reconnects + 1


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


class CandleStream:
    """Closed bars only, no gap and no duplicate: REST fills what the stream missed on start and reconnect."""

    def __init__(self, ex, venue, symbol, market_symbol, bar_ms, history, stale_after, clock=time.time):
        self.ex, self.venue, self.symbol, self.market_symbol = ex, venue, symbol, market_symbol
        self.bar_ms, self.history, self.stale_after, self.clock = bar_ms, history, stale_after, clock
        self.timeframe = next(name for name, ms in TIMEFRAME_MS.items() if ms == bar_ms)
        self.open_bar = None  # the bar the stream is still updating
        self.held = None  # updates that arrived during a backfill, taken once it is done
        # the closed candles, ascending open time, only as an array: with a list of tuples beside it (rebuilt into
        # the array at each close) bench/scale.py's resident memory was 275 MB, without it 196 MB
        self.array = np.empty((0, 6))
        self.heard = None  # monotonic time of the last message or backfill
        self.error = "not started"
        self.reconnects = 0

    def candles(self):
        return self.array

    def health(self):
        """None when fresh, else why not."""
        if self.heard is None:
            return self.error
        quiet = time.monotonic() - self.heard
        if quiet > self.stale_after:
            return f"stale: nothing for {quiet:.0f}s ({self.error or 'no message'})"
        return None

    async def follow(self):
        """Backfills, then takes the stream's updates until it fails. The venue is subscribed already and the
        stream is read from before the backfill: what arrives meanwhile is held, and taken after it."""
        self.open_bar, self.held = None, []
        reader = asyncio.ensure_future(self._read())
        try:
            await self.backfill()
            held, self.held = self.held, None
            for candle in held:
                self._update(candle)
            await reader
        finally:
            reader.cancel()

    async def _read(self):
        # no await between two watch calls: ccxt wakes only a call already waiting when an update arrives
        while True:
            got = await self.ex.watch_ohlcv_for_symbols([[self.market_symbol, self.timeframe]])
            for candle in got[self.market_symbol][self.timeframe]:
                if self.held is None:
                    self._update(candle)
                else:
                    self.held.append(candle)
            self.heard, self.error = time.monotonic(), None

    async def backfill(self):
        """Fetches every closed bar after the last one held (or the last `history` bars) over REST."""
        now = int(self.clock() * 1000)
        since = int(self.array[-1, TS]) + self.bar_ms if len(self.array) else now - (self.history + 1) * self.bar_ms
        while since + self.bar_ms <= now:
            # no more bars than missing: venues weigh a request by its limit (Binance 2 up to 499, 5 up to 1000),
            # and so does ccxt's throttle: bench/scale.py started in 76 s asking 1000, in 31 s asking this; and no
            # more than a page, since OKX and Bybit answer the newest part of a wider window and drop the rest
            page = await self.ex.fetch_ohlcv(self.market_symbol, self.timeframe, since=since,
                                             limit=min(venues.PAGES.get(self.ex.id, (1000,))[0],
                                                       (now - since) // self.bar_ms + 1))
            if not page:
                break
            self._take(page, newest_open=now // self.bar_ms * self.bar_ms)
            if page[-1][0] < since:
                break
            since = int(page[-1][0]) + self.bar_ms
        self.heard, self.error = time.monotonic(), None

    def _update(self, candle):
        """A bar is closed once a later bar opens: until then it is only remembered as the open one."""
        if self.open_bar is not None and candle[0] > self.open_bar[0]:
            self._take([self.open_bar], newest_open=int(candle[0]))
        if self.open_bar is None or candle[0] >= self.open_bar[0]:
            self.open_bar = list(candle)

    def _take(self, candles, newest_open):
        """Keeps the bars that closed (opened before newest_open) and are newer than the last one held."""
        last = self.array[-1, TS] if len(self.array) else -1
        new = []
        for c in candles:
            ts = int(c[0])
            if last < ts < newest_open and None not in c[1:6]:
                new.append((ts, *c[1:6]))
                last = ts
        if new:
            self.array = np.concatenate((self.array, np.array(new, dtype=float)))[-self.history:]


def _get(url, timeout, headers=None):
    req = urllib.request.Request(url, headers={"User-Agent": "vigil", **(headers or {})})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read()
    if not body.strip():
        raise ValueError("empty body")
    return json.loads(body)


async def get_json(url, timeout, headers=None):
    """urllib in a worker thread: the event loop never waits on a socket."""
    return await asyncio.wait_for(asyncio.to_thread(_get, url, timeout, headers), timeout + 1)


class FearGreed:
    """alternative.me's daily index, cached until its announced next update. Source: alternative.me."""

    def __init__(self, url, timeout):
        self.url, self.timeout = url, timeout
        self.value, self.next_fetch = None, 0.0

    async def fetch(self):
        if self.value is None or time.time() >= self.next_fetch:
            body = await get_json(self.url, self.timeout)
            entry = body["data"][0]
            self.value = {"value": int(entry["value"]), "label": entry["value_classification"],
                          "ts": int(entry["timestamp"]) * 1000, "source": "alternative.me"}
            wait = float(entry.get("time_until_update") or 0)
            self.next_fetch = time.time() + max(wait, 300.0)  # never more often than every 5 minutes
        return self.value


class Wallets:
    """Tracked wallets' ETH transfers through an Etherscan-compatible API, as exchange inflows and outflows."""

    def __init__(self, url, key, wallets, exchange_labels, window_s, timeout):
        self.url, self.key, self.timeout, self.window_s = url, key, timeout, window_s
        self.labels = {}
        for item in wallets:
            address, _, label = item.partition(":")
            self.labels[address.lower()] = label or address
        self.exchange = {a for a, label in self.labels.items()
                         if any(label.lower().startswith(x.lower()) for x in exchange_labels)}

    async def fetch(self, now, eth_usd):
        if eth_usd is None:
            raise ValueError("no ETH price to value transfers in USD")
        bodies = await asyncio.gather(*(get_json(self._query(a), self.timeout) for a in self.labels))
        seen, transfers = set(), []
        for body in bodies:
            if str(body.get("status")) != "1" and body.get("message") != "No transactions found":
                raise ValueError(f"etherscan: {body.get('message')}: {str(body.get('result'))[:100]}")
            for tx in body.get("result") or []:
                ts = int(tx["timeStamp"]) * 1000
                if tx["hash"] in seen or now - ts > self.window_s * 1000:
                    continue
                seen.add(tx["hash"])
                src, dst = tx["from"].lower(), tx["to"].lower()
                flow = "inflow" if dst in self.exchange else "outflow" if src in self.exchange else "wallet"
                transfers.append({"id": tx["hash"], "ts": ts, "asset": "ETH", "usd": int(tx["value"]) / 1e18 * eth_usd,
                                  "from": self.labels.get(src, src), "to": self.labels.get(dst, dst), "flow": flow})
        return transfers

    def _query(self, address):
        return self.url + "?" + urllib.parse.urlencode({"module": "account", "action": "txlist", "address": address,
                                                        "sort": "desc", "page": 1, "offset": 100,
                                                        "apikey": self.key})


class WhaleAlert:
    """Whale Alert's large transfers (a paid key) as exchange inflows and outflows, by the owners it labels."""

    def __init__(self, url, key, min_usd, window_s, timeout):
        self.url, self.key, self.min_usd, self.window_s, self.timeout = url, key, min_usd, window_s, timeout

    async def fetch(self, now):
        query = urllib.parse.urlencode({"api_key": self.key, "min_value": int(self.min_usd),
                                        "start": now // 1000 - self.window_s})
        body = await get_json(f"{self.url}?{query}", self.timeout)
        if body.get("result") != "success":
            raise ValueError(f"whale alert: {body.get('message') or body.get('result')}")
        transfers = []
        for tx in body.get("transactions") or []:
            src, dst = tx["from"], tx["to"]
            into, out = dst.get("owner_type") == "exchange", src.get("owner_type") == "exchange"
            transfers.append({"id": f"wa-{tx['id']}", "ts": int(tx["timestamp"]) * 1000,
                              "asset": tx["symbol"].upper(), "usd": float(tx["amount_usd"]),
                              "from": src.get("owner") or src.get("address", "?"),
                              "to": dst.get("owner") or dst.get("address", "?"),
                              "flow": "inflow" if into and not out else "outflow" if out and not into else "wallet"})
        return transfers


class Social:
    """LunarCrush's coin list (a paid key): social volume per asset against its own running baseline."""

    def __init__(self, url, key, timeout):
        self.url, self.key, self.timeout = url, key, timeout
        self.baseline = {}  # asset -> moving average of the 24h social volume seen so far

    async def fetch(self, assets):
        body = await get_json(f"{self.url}?limit=1000", self.timeout, {"Authorization": f"Bearer {self.key}"})
        rows = {str(r.get("symbol", "")).upper(): r for r in body["data"]}
        out = {}
        for asset in assets:
            volume = (rows.get(asset) or {}).get("social_volume_24h")
            if volume is None:
                continue
            base = self.baseline.get(asset, float(volume))
            out[asset] = {"volume": float(volume), "baseline": base}
            self.baseline[asset] = 0.9 * base + 0.1 * float(volume)
        if not out:
            raise ValueError("no social volume for the configured assets in the answer")
        return out
