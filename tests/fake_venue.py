"""A fake Binance USD-M / Bybit / OKX on 127.0.0.1: the public REST endpoints ccxt calls and a WebSocket."""
import base64
import hashlib
import hmac
import itertools
import json
import queue
import select
import struct
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MIN = 60_000
BNB_PRICE = 600.0  # Binance charges this account's fees in BNB
WORKING = ("NEW", "PARTIALLY_FILLED")
PARTIAL = {"partial", "partial_then_fill", "partial_then_expire"}
# Binance's answer -> Bybit's (retCode, retMsg) for the same refusal
BYBIT_ERRORS = {-1003: (10006, "Too many visits!"), -2019: (110007, "Insufficient available balance"),
                -4116: (110072, "OrderLinkedID is duplicate"), -4061: (10001, "position idx not match position mode")}
# the last part of a history endpoint's path (Bybit: the whole path) -> what it serves
HISTORY = {"klines": "candles", "markPriceKlines": "mark", "fundingRate": "funding",
           "/v5/market/kline": "candles", "/v5/market/mark-price-kline": "mark",
           "/v5/market/funding/history": "funding",
           "candles": "candles", "history-candles": "candles", "mark-price-candles": "mark",
           "history-mark-price-candles": "mark", "funding-rate-history": "funding"}


def _binance_market(base):
    return {"symbol": f"{base}USDT", "pair": f"{base}USDT", "contractType": "PERPETUAL", "deliveryDate": 4133404800000,
            "onboardDate": 1569398400000, "status": "TRADING", "baseAsset": base, "quoteAsset": "USDT",
            "marginAsset": "USDT", "pricePrecision": 2, "quantityPrecision": 3, "baseAssetPrecision": 8,
            "quotePrecision": 8, "underlyingType": "COIN", "settlePlan": 0, "triggerProtect": "0.05",
            "filters": [{"filterType": "PRICE_FILTER", "minPrice": "0.10", "maxPrice": "1000000", "tickSize": "0.10"},
                        {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "1000", "stepSize": "0.001"},
                        {"filterType": "MIN_NOTIONAL", "notional": "5"}],
            "orderTypes": ["LIMIT", "MARKET", "STOP_MARKET"], "timeInForce": ["GTC", "IOC"]}


def _binance_spot_market(base):
    return {"symbol": f"{base}USDT", "status": "TRADING", "baseAsset": base, "quoteAsset": "USDT",
            "baseAssetPrecision": 8, "quotePrecision": 8, "quoteAssetPrecision": 8, "orderTypes": ["LIMIT", "MARKET"],
            "isSpotTradingAllowed": True, "isMarginTradingAllowed": False, "permissions": ["SPOT"],
            "permissionSets": [["SPOT"]], "filters": [
                {"filterType": "PRICE_FILTER", "minPrice": "0.01", "maxPrice": "1000000", "tickSize": "0.01"},
                {"filterType": "LOT_SIZE", "minQty": "0.00001", "maxQty": "9000", "stepSize": "0.00001"}]}


def _bybit_market(base):
    return {"symbol": f"{base}USDT", "contractType": "LinearPerpetual", "status": "Trading", "baseCoin": base,
            "quoteCoin": "USDT", "settleCoin": "USDT", "launchTime": "1584230400000", "deliveryTime": "0",
            "priceScale": "2", "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
            "priceFilter": {"minPrice": "0.10", "maxPrice": "199999.80", "tickSize": "0.10"},
            "lotSizeFilter": {"maxOrderQty": "100.000", "minOrderQty": "0.001", "qtyStep": "0.001",
                              "minNotionalValue": "5"}, "fundingInterval": 480, "copyTrading": "both"}


def _okx_market(base):
    return {"instType": "SWAP", "instId": f"{base}-USDT-SWAP", "uly": f"{base}-USDT", "instFamily": f"{base}-USDT",
            "baseCcy": "", "quoteCcy": "", "settleCcy": "USDT", "ctValCcy": base, "ctVal": "0.01", "ctMult": "1",
            "ctType": "linear", "listTime": "1611916828000", "expTime": "", "lever": "100", "tickSz": "0.1",
            "lotSz": "0.01", "minSz": "0.01", "state": "live", "alias": "", "optType": "", "stk": ""}


class FakeVenues:
    """REST answers come from self.candles / self.funding; WebSocket subscribers get what tests push."""

    def __init__(self, bases=("BTC", "ETH"), nodelay=False):
        self.bases = list(bases)
        # nodelay drops the ~40 ms delayed-ACK stall of every answer; off, runs last as long as timed kills expect
        self.nodelay = nodelay
        self.candles = {}  # (venue, BASE) -> list of [ts, o, h, l, c, v]
        self.funding = {}  # (venue, BASE) -> (rate, next funding ts, interval hours)
        self.marks = {}  # (venue, BASE) -> list of mark-price [ts, o, h, l, c]
        self.funding_history = {}  # (venue, BASE) -> list of settled [ts, rate]
        self.pages = {"binance": (1500, 1000), "binance_spot": (1000, 0), "bybit": (1000, 200), "okx": (100, 100)}
        """Rows one answer holds at most per venue: (candles, funding settlements), as the venues cap them."""
        self.fng = 50
        self.api_key, self.secret = "TESTKEY", "SECRETKEY123456"
        self.orders = {}  # client order id -> Binance order dict (the exchange's own state)
        # Conditional (stop-market) orders by client id, until they trigger: Binance keeps them in its Algo
        # Service (its own ids and statuses; the order it triggers has a new id), Bybit among its orders.
        self.stops = {}
        self.order_posts = []  # every order request that reached the matching engine's door
        self.duplicate_posts = []  # client ids posted again after the venue had taken them (refused)
        self.order_faults = []
        """One entry per order request, a kind or a tuple of kinds applied together, e.g. (503, "lag"):
        418/429 throttled, not taken; "reject" margin refused; "timeout", 503, "garbage" taken but the answer lost;
        "partial" half filled, the rest expired at once; "new" NEW, fills completely later; "partial_then_fill"
        half now, the rest later; "partial_then_expire" half now, later EXPIRED with that half; "never" NEW and
        working until cancelled; "lag" lookups by client id say "not found" for the first lag_lookups of them
        (they still count as lookups: the order moves on meanwhile)."""
        self.price = 100.0  # every fill's price
        self.fill_after_lookups = 1  # a working order moves on at its n-th status lookup, never by the clock
        self.lag_lookups = 2
        self.duplicate_trades = False  # every trade listed twice, same id, as venues sometimes do
        self.recv_window_errors = 0
        """While > 0, each signed request uses one up and is refused for its timestamp: Binance 400 -1021,
        Bybit retCode 10002. ccxt raises InvalidNonce for both."""
        self.hedge_mode = False  # orders must name their side (Binance positionSide, Bybit positionIdx 1/2)
        self.bybit_trade_only = False  # Bybit /v5/asset/* refused with 10005, as for a key without Wallet rights
        self.trade_ids = itertools.count(1)
        self.on_order = None  # called with the client id before the order is stored (crash tests)
        self.extra_positions = {}  # positions opened outside Vigil, by exchange symbol
        self.open_orders = []  # resting orders the exchange reports (e.g. someone else's)
        self.balance = 10000.0
        self.withdrawals = False
        self.may_trade = True  # False: a read-only key (Binance without futures, Bybit without ContractTrade)
        self.clock_offset_ms = 0
        self.txs = []  # Etherscan txlist rows
        self.whales = []  # Whale Alert transactions
        self.social = {}  # asset -> LunarCrush social_volume_24h
        self.auth, self.last_headers = [], {}
        self.faults = []  # (path fragment, kind): kind is a status code, "garbage", "empty" or "slow"
        self.requests = []
        self.latency = 0.0
        self.conns = []  # open WebSocket connections: dicts with socket, venue, topics, outbox
        self.conn_ids = itertools.count(1)
        self.subscribes = []  # every subscribe request: (venue, connection number, topics it named)
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.ws = f"ws://127.0.0.1:{self.server.server_port}"
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.drop_connections()
        self.server.shutdown()
        self.server.server_close()

    # --- what tests do -------------------------------------------------------------------------
    def seed(self, venue, base, start, n, price=100.0):
        rows = [[start + i * MIN, price + i % 7, price + 8, price - 8, price + (i + 1) % 7, 10.0 + i % 5]
                for i in range(n)]
        self.candles[(venue, base)] = rows
        return rows

    def push_kline(self, venue, base, row, closed):
        """Sends one kline update to every connection subscribed to it, in the venue's own format."""
        ts, o, h, l, c, v = row
        if venue == "binance":
            topic = f"{base.lower()}usdt@kline_1m"
            msg = {"e": "kline", "E": ts + 1000, "s": f"{base}USDT", "k": {
                "t": ts, "T": ts + MIN - 1, "s": f"{base}USDT", "i": "1m", "f": 1, "L": 2, "o": str(o), "c": str(c),
                "h": str(h), "l": str(l), "v": str(v), "n": 3, "x": closed, "q": "1", "V": "1", "Q": "1", "B": "0"}}
        elif venue == "okx":
            arg = {"channel": "candle1m", "instId": f"{base}-USDT-SWAP"}
            topic = f"candle1m:{arg['instId']}"
            msg = {"arg": arg, "data": [[str(ts), *map(str, row[1:6]), "1", "1", "1" if closed else "0"]]}
        else:
            topic = f"kline.1.{base}USDT"
            msg = {"topic": topic, "type": "snapshot", "ts": ts + 1000, "data": [{
                "start": ts, "end": ts + MIN - 1, "interval": "1", "open": str(o), "close": str(c), "high": str(h),
                "low": str(l), "volume": str(v), "turnover": "1", "confirm": closed, "timestamp": ts + 1000}]}
        self._send_topic(venue, topic, msg)

    def push_liquidation(self, venue, base, side, qty, price, ts):
        if venue == "binance":
            topic = f"{base.lower()}usdt@forceOrder"
            msg = {"e": "forceOrder", "E": ts, "o": {"s": f"{base}USDT", "S": side.upper(), "o": "LIMIT", "f": "IOC",
                                                     "q": str(qty), "p": str(price), "ap": str(price), "X": "FILLED",
                                                     "l": str(qty), "z": str(qty), "T": ts}}
        else:
            topic = f"allLiquidation.{base}USDT"
            msg = {"topic": topic, "type": "snapshot", "ts": ts,
                   "data": [{"T": ts, "s": f"{base}USDT", "S": side.capitalize(), "v": str(qty), "p": str(price)}]}
        self._send_topic(venue, topic, msg)

    def settle(self, cid):
        """Moves an order straight to its final state, as if time had passed ("never" orders keep working)."""
        with self.lock:
            if self.orders[cid]["_next"]:
                self._step(self.orders[cid])

    def move_price(self, price):
        """The mark moves to price: every resting stop it crosses triggers as a reduce-only market order."""
        with self.lock:
            self.price = price
            for stop in list(self.stops.values()):
                sell = stop["side"] == "SELL"
                if stop["algoStatus"] == "NEW" and (price <= stop["_trigger"] if sell else price >= stop["_trigger"]):
                    self._trigger(stop)

    def drop_stops(self, status="EXPIRED"):
        """The venue cancels every resting stop on its own (as Binance does when a position is closed by hand)."""
        with self.lock:
            for stop in self.stops.values():
                if stop["algoStatus"] == "NEW":
                    stop.update(algoStatus=status, updateTime=int(time.time() * 1000))

    def resting_stops(self):
        """{client id: (side, quantity, trigger price)} of the stops still waiting for their price."""
        with self.lock:
            return {cid: (s["side"], float(s["quantity"]), s["_trigger"]) for cid, s in self.stops.items()
                    if s["algoStatus"] == "NEW"}

    def settle_all(self):
        for cid in list(self.orders):
            self.settle(cid)

    def subscribed(self, venue, topic):
        with self.lock:
            return any(c["venue"] == venue and topic in c["topics"] for c in self.conns)

    def subscribe_requests(self, venue):
        """(subscribe requests, connections they came on, topics they named) from venue's clients so far."""
        with self.lock:
            mine = [(n, topics) for v, n, topics in self.subscribes if v == venue]
        return len(mine), len({n for n, _ in mine}), sum(len(topics) for _, topics in mine)

    def drop_connections(self):
        with self.lock:
            for c in self.conns:
                c["outbox"].put(None)  # the connection thread closes the socket
            self.conns = []

    def _send_topic(self, venue, topic, msg):
        with self.lock:
            for c in self.conns:
                if c["venue"] == venue and topic in c["topics"]:
                    c["outbox"].put(json.dumps(msg))

    # --- REST ----------------------------------------------------------------------------------
    def _rest(self, path, q):
        for i, (fragment, kind) in enumerate(self.faults):
            if fragment in path:
                del self.faults[i]
                return kind
        if path == "/fng/":
            return {"name": "Fear and Greed Index", "metadata": {"error": None}, "data": [{
                "value": str(self.fng), "value_classification": "Extreme Fear" if self.fng < 25 else "Neutral",
                "timestamp": str(int(time.time()) // 86400 * 86400), "time_until_update": "3600"}]}
        if path == "/api4/public/coins/list/v2":
            self.auth.append(self.last_headers.get("Authorization"))
            return {"config": {"sort": "market_cap_rank", "generated": int(time.time())},
                    "data": [{"id": i, "symbol": b, "social_volume_24h": v, "interactions_24h": 10 * v}
                             for i, (b, v) in enumerate(self.social.items())]}
        if path == "/v1/transactions":
            return {"result": "success", "cursor": "c", "count": len(self.whales), "transactions": self.whales}
        if path == "/api":
            txs = [t for t in self.txs if q["address"].lower() in (t["from"], t["to"])]
            return {"status": "1" if txs else "0", "message": "OK" if txs else "No transactions found", "result": txs}
        venue = ("binance" if path.startswith("/fapi") else "binance_spot" if path.startswith("/api/v3")
                 else "bybit" if path.startswith("/v5") else "okx")
        if path == "/api/v3/exchangeInfo":
            return {"timezone": "UTC", "serverTime": int(time.time() * 1000), "rateLimits": [],
                    "symbols": [_binance_spot_market(b) for b in self.bases]}
        if path == "/fapi/v1/time":
            return {"serverTime": int(time.time() * 1000) + self.clock_offset_ms}
        if path.endswith("/exchangeInfo"):
            return {"timezone": "UTC", "serverTime": int(time.time() * 1000), "rateLimits": [], "assets": [],
                    "symbols": [_binance_market(b) for b in self.bases + ["BNB"]]}
        if path == "/fapi/v1/ticker/24hr" and q.get("symbol") == "BNBUSDT":
            return {"symbol": "BNBUSDT", "lastPrice": str(BNB_PRICE), "openPrice": str(BNB_PRICE), "volume": "1",
                    "closeTime": int(time.time() * 1000)}
        if path == "/v5/market/time":
            now = int(time.time() * 1000) + self.clock_offset_ms
            return {"retCode": 0, "retMsg": "OK", "result": {"timeSecond": str(now // 1000),
                                                             "timeNano": str(now * 1_000_000)}, "time": now}
        if path == "/v5/market/instruments-info":
            rows = [] if q.get("status") == "PreLaunch" else [_bybit_market(b) for b in self.bases]
            return {"retCode": 0, "retMsg": "OK", "result": {"category": "linear", "nextPageCursor": "",
                                                                 "list": rows},
                    "retExtInfo": {}, "time": int(time.time() * 1000)}
        if path == "/api/v5/public/instruments":
            return {"code": "0", "msg": "", "data": [_okx_market(b) for b in self.bases]}
        history = self._history(venue, path, q)
        if history is not None:
            return history
        if path.endswith("/premiumIndex"):
            rows = [{"symbol": f"{b}USDT", "markPrice": "100.0", "indexPrice": "100.0",
                     "estimatedSettlePrice": "100.0", "lastFundingRate": str(rate), "interestRate": "0.0001",
                     "nextFundingTime": nxt, "time": int(time.time() * 1000)}
                    for (v, b), (rate, nxt, _) in sorted(self.funding.items()) if v == venue]
            return [r for r in rows if r["symbol"] == q["symbol"]][0] if "symbol" in q else rows
        if path.endswith("/fundingInfo"):
            return [{"symbol": f"{b}USDT", "fundingIntervalHours": self.funding.get((venue, b), (0, 0, 8))[2]}
                    for b in self.bases]
        if path == "/v5/market/tickers":
            rows = [{"symbol": f"{b}USDT", "lastPrice": "100", "markPrice": "100", "indexPrice": "100",
                     "fundingRate": str(rate), "nextFundingTime": str(nxt), "fundingIntervalHour": str(int(hours)),
                     "bid1Price": "99", "ask1Price": "101", "volume24h": "1", "turnover24h": "1"}
                    for (v, b), (rate, nxt, hours) in sorted(self.funding.items()) if v == venue]
            rows = [r for r in rows if r["symbol"] == q["symbol"]] if "symbol" in q else rows
            return {"retCode": 0, "retMsg": "OK", "result": {"category": "linear", "list": rows},
                    "retExtInfo": {}, "time": int(time.time() * 1000)}
        if path == "/api/v5/public/funding-rate":
            rows = [{"instType": "SWAP", "instId": f"{b}-USDT-SWAP", "fundingRate": str(rate), "nextFundingRate": "",
                     "fundingTime": str(nxt), "nextFundingTime": str(nxt + int(hours * 3_600_000)),
                     "ts": str(int(time.time() * 1000)), "method": "current_period"}
                    for (v, b), (rate, nxt, hours) in sorted(self.funding.items()) if v == venue]
            if q.get("instId") != "ANY":
                rows = [r for r in rows if r["instId"] == q["instId"]]
            return {"code": "0", "msg": "", "data": rows}
        return 404

    def _history(self, venue, path, q):
        """Candles, mark-price candles and funding history, paged as each venue pages them: Binance the oldest
        rows from startTime on; Bybit (given an end) and OKX the newest rows of the window asked, newest first.
        A page holds at most the venue's limit (self.pages), whatever the request asks. None: another path."""
        kind = HISTORY.get(path.rsplit("/", 1)[-1] if venue != "bybit" else path)
        if kind is None:
            return None
        mark, funding = kind == "mark", kind == "funding"
        base = q.get("symbol", q.get("instId", "")).replace("-USDT-SWAP", "").replace("USDT", "")
        rows = (self.funding_history if funding else self.marks if mark else self.candles).get((venue, base), [])
        n = min(int(q.get("limit", 100)), self.pages[venue][funding])
        if venue == "okx":  # before and after: exclusive bounds
            lo, hi = int(q.get("before", -1)) + 1, int(q.get("after", 2**62)) - 1
        else:
            lo = int(q.get("startTime", q.get("start", 0)))
            hi = int(q.get("endTime", q.get("end", 2**62)))
        inside = [r for r in rows if lo <= r[0] <= hi]
        newest = venue == "okx" or venue == "bybit" and ("end" in q or "endTime" in q)
        page = inside[-n:] if newest else inside[:n]
        if venue != "binance" and venue != "binance_spot":
            page = page[::-1]  # Bybit and OKX list newest first
        if funding and venue == "binance":
            return [{"symbol": q["symbol"], "fundingRate": str(r[1]), "fundingTime": r[0], "markPrice": "100"}
                    for r in page]
        if funding and venue == "bybit":
            return {"retCode": 0, "retMsg": "OK", "result": {"category": "linear", "list": [
                {"symbol": q["symbol"], "fundingRate": str(r[1]), "fundingRateTimestamp": str(r[0])}
                for r in page]}, "retExtInfo": {}, "time": 0}
        if funding:
            return {"code": "0", "msg": "", "data": [
                {"instType": "SWAP", "instId": q["instId"], "fundingRate": str(r[1]), "realizedRate": str(r[1]),
                 "fundingTime": str(r[0]), "method": "current_period"} for r in page]}
        if venue.startswith("binance"):
            return [[r[0], *map(str, r[1:5]), "0" if mark else str(r[5]), r[0] + MIN - 1, "1", 3, "1", "1", "0"]
                    for r in page]
        if venue == "bybit":
            return {"retCode": 0, "retMsg": "OK", "result": {"symbol": q["symbol"], "category": "linear", "list": [
                [str(r[0]), *map(str, r[1:5])] + ([] if mark else [str(r[5]), "1"]) for r in page]},
                "retExtInfo": {}, "time": 0}
        return {"code": "0", "msg": "", "data": [  # contracts of 0.01 BTC, then base and quote volume, confirmed
            [str(r[0]), *map(str, r[1:5])] + (["1"] if mark else [str(r[5] * 100), str(r[5]), "1", "1"])
            for r in page]}

    def _handler(self):
        venues = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = venues.nodelay  # headers and body go out as two writes

            def log_message(self, *args):
                pass

            def do_POST(self):
                url = urllib.parse.urlparse(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
                if self.headers.get("X-BAPI-API-KEY"):
                    return self._private("POST", url.path, url.query, raw)
                return self._private("POST", url.path, url.query + ("&" if url.query and raw else "") + raw)

            def do_DELETE(self):
                url = urllib.parse.urlparse(self.path)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))  # unread, it garbles the next request
                return self._private("DELETE", url.path, url.query)

            def _private(self, method, path, signed, raw_body=""):
                if self.headers.get("X-BAPI-API-KEY"):
                    status, body = venues._bybit(method, path, signed, raw_body, self.headers)
                else:
                    status, body = venues._signed(method, path, signed, self.headers.get("X-MBX-APIKEY"))
                if body == "timeout":
                    time.sleep(2)  # accepted, but the answer comes too late for the client
                    return self._send(504, b"gateway timeout")
                self._send(status, body if isinstance(body, bytes) else json.dumps(body).encode())

            def do_GET(self):
                url = urllib.parse.urlparse(self.path)
                q = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
                if self.headers.get("Upgrade", "").lower() == "websocket":
                    return venues._websocket(self, url.path)
                if "signature=" in url.query or self.headers.get("X-BAPI-API-KEY"):
                    return self._private("GET", url.path, url.query)
                venues.requests.append((url.path, q))
                venues.last_headers = dict(self.headers)
                if venues.latency:
                    time.sleep(venues.latency)
                answer = venues._rest(url.path, q)
                if answer == "slow":
                    time.sleep(3)
                    answer = 504
                if isinstance(answer, int):
                    return self._send(answer, f"HTTP {answer} from the fake venue".encode())
                if answer == "garbage":
                    return self._send(200, b"<html>upstream hiccup</html>")
                if answer == "empty":
                    return self._send(200, b"")
                self._send(200, json.dumps(answer).encode())

            def _send(self, status, data):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler

    # --- signed Binance USD-M endpoints --------------------------------------------------------------
    def _signed(self, method, path, signed, api_key):
        """Checks key and HMAC-SHA256 signature like Binance, then keeps order state by client order id."""
        payload, _, signature = signed.rpartition("&signature=")
        expected = hmac.new(self.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        if api_key != self.api_key or not hmac.compare_digest(signature, expected):
            return 401, {"code": -1022, "msg": "Signature for this request is not valid."}
        q = {k: v[0] for k, v in urllib.parse.parse_qs(payload).items()}
        symbol = lambda o: q.get("symbol") in (None, o["symbol"])  # noqa: E731
        with self.lock:
            self.requests.append((path, q))
            if self.recv_window_errors > 0:
                self.recv_window_errors -= 1
                return 400, {"code": -1021, "msg": "Timestamp for this request is outside of the recvWindow."}
            if method == "POST" and path == "/fapi/v1/order":
                return self._new_order(q)
            if method == "GET" and path == "/fapi/v1/order":
                cid = q.get("origClientOrderId")
                order = self._lookup(self._find(cid, q.get("orderId")), bool(cid))
                return (200, _public(order)) if order else (400, {"code": -2013, "msg": "Order does not exist."})
            if method == "DELETE" and path == "/fapi/v1/order":
                order = self._find(q.get("origClientOrderId"), q.get("orderId"))
                if not self._cancel(order):
                    return 400, {"code": -2011, "msg": "Unknown order sent."}
                return 200, _public(order)
            if method == "POST" and path == "/fapi/v1/algoOrder":
                return self._new_stop(q, q.get("clientAlgoId"))
            if path == "/fapi/v1/algoOrder":
                stop = self.stops.get(q.get("clientAlgoId")) or next(
                    (s for s in self.stops.values() if str(s["algoId"]) == q.get("algoId")), None)
                if stop is None or method == "GET" and self._lagging(stop):
                    return 400, {"code": -2013, "msg": "Order does not exist."}
                if method == "DELETE":
                    if stop["algoStatus"] != "NEW":
                        return 400, {"code": -20124, "msg": "Invalid algo id or it has been completed."}
                    stop.update(algoStatus="CANCELED", updateTime=int(time.time() * 1000))
                return 200, _public(stop)
            if method == "GET" and path == "/fapi/v1/openAlgoOrders":
                return 200, [_public(s) for s in self.stops.values() if s["algoStatus"] == "NEW" and symbol(s)]
            if method == "GET" and path == "/fapi/v1/positionSide/dual":
                return 200, {"dualSidePosition": self.hedge_mode}
            if method == "GET" and path == "/fapi/v1/leverageBracket":
                return 200, [{"symbol": f"{b}USDT", "brackets": [{
                    "bracket": 1, "initialLeverage": 20, "notionalCap": 1e9, "notionalFloor": 0,
                    "maintMarginRatio": 0.004, "cum": 0}]} for b in self.bases]
            if method == "GET" and path in ("/fapi/v2/positionRisk", "/fapi/v3/positionRisk"):
                return 200, [{"symbol": sym, "positionAmt": str(amt), "entryPrice": str(self.price),
                              "markPrice": str(self.price), "unRealizedProfit": "0", "liquidationPrice": "0",
                              "leverage": "20", "marginType": "cross", "isolatedMargin": "0",
                              "positionSide": ("LONG" if amt > 0 else "SHORT") if self.hedge_mode else "BOTH",
                              "notional": str(amt * self.price), "updateTime": 0}
                             for sym, amt in self.net_positions().items() if amt]
            if method == "GET" and path == "/fapi/v3/account":
                return 200, {"totalWalletBalance": str(self.balance), "availableBalance": str(self.balance),
                             "assets": [{"asset": "USDT", "walletBalance": str(self.balance),
                                         "availableBalance": str(self.balance), "crossWalletBalance": str(self.balance),
                                         "unrealizedProfit": "0", "marginBalance": str(self.balance)}],
                             "positions": []}
            if method == "GET" and path == "/fapi/v1/openOrders":
                return 200, [o for o in self.open_orders + self._working() if symbol(o)]
            if method == "GET" and path == "/sapi/v1/account/apiRestrictions":
                return 200, {"ipRestrict": False, "createTime": 0, "enableReading": True, "enableFutures": self.may_trade,
                             "enableSpotAndMarginTrading": False, "enableWithdrawals": self.withdrawals,
                             "enableInternalTransfer": False, "permitsUniversalTransfer": False,
                             "enableVanillaOptions": False, "enableMargin": False}
            if method == "GET" and path == "/fapi/v1/userTrades":
                orders = ([self._find(None, q["orderId"])] if "orderId" in q
                          else [o for o in self.orders.values() if symbol(o)])
                return 200, [self._trade(o, t) for o, t in self._trades_of(orders)]
        return 404, {"code": -1, "msg": f"{method} {path} not faked"}

    def _bybit(self, method, path, query, body, headers):
        """Bybit v5: HMAC-SHA256 of timestamp + key + recvWindow + (body or query), then the same order book."""
        pre = headers.get("X-BAPI-TIMESTAMP", "") + headers.get("X-BAPI-API-KEY", "") + headers.get(
            "X-BAPI-RECV-WINDOW", "")
        expected = hmac.new(self.secret.encode(), (pre + (body if method == "POST" else query)).encode(),
                            hashlib.sha256).hexdigest()
        ok = lambda result: (200, {"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {},  # noqa: E731
                                   "time": int(time.time() * 1000)})
        fail = lambda code, msg: (200, {"retCode": code, "retMsg": msg, "result": {}, "retExtInfo": {},  # noqa: E731
                                        "time": int(time.time() * 1000)})
        if headers["X-BAPI-API-KEY"] != self.api_key or not hmac.compare_digest(headers.get("X-BAPI-SIGN", ""),
                                                                                  expected):
            return fail(10004, "error sign!")
        q = {k: v[0] for k, v in urllib.parse.parse_qs(query).items()}
        req = json.loads(body) if method == "POST" and body else {}
        symbol = lambda o: q.get("symbol") in (None, o["symbol"])  # noqa: E731
        with self.lock:
            self.requests.append((path, q or body))
            if self.recv_window_errors > 0:
                self.recv_window_errors -= 1
                return fail(10002, "invalid request, please check your server timestamp or recv_window param")
            if self.bybit_trade_only and path.startswith("/v5/asset/"):
                return fail(10005, "Permission denied, please check your API key permissions.")
            if path == "/v5/asset/coin/query-info":
                return ok({"rows": []})
            if path == "/v5/user/query-api":
                wallet = [] if self.bybit_trade_only else ["AccountTransfer"] + ["Withdraw"] * self.withdrawals
                return ok({"id": "1", "readOnly": 0, "permissions": {
                    "ContractTrade": ["Order", "Position"] * self.may_trade, "Wallet": wallet}, "unified": 1, "uta": 1})
            if path == "/v5/account/wallet-balance":
                return ok({"list": [{"accountType": "UNIFIED", "totalEquity": str(self.balance),
                                     "totalWalletBalance": str(self.balance), "coin": [{
                                         "coin": "USDT", "equity": str(self.balance),
                                         "walletBalance": str(self.balance), "unrealisedPnl": "0",
                                         "locked": "0", "totalPositionIM": "0", "totalOrderIM": "0"}]}]})
            if path == "/v5/account/info":
                return ok({"unifiedMarginStatus": 4, "marginMode": "REGULAR_MARGIN"})
            if path == "/v5/order/create" and req.get("triggerPrice"):
                if str(req.get("triggerDirection")) not in ("1", "2"):
                    return fail(10001, "triggerDirection is required for a conditional order")
                status, answer = self._new_stop({
                    "symbol": req["symbol"], "side": req["side"].upper(), "type": "STOP_MARKET",
                    "quantity": req["qty"], "triggerPrice": req["triggerPrice"],
                    "reduceOnly": str(req.get("reduceOnly", False)).lower(),
                    "workingType": {"MarkPrice": "MARK_PRICE"}.get(req.get("triggerBy"), "CONTRACT_PRICE")},
                    req["orderLinkId"], bybit=True)
                if status == 503:
                    return 503, b"service unavailable"
                if status != 200:
                    return fail(110072 if answer["code"] == -20132 else 10001, answer["msg"])
                return ok({"orderId": str(answer["algoId"]), "orderLinkId": req["orderLinkId"]})
            if path == "/v5/order/create":
                status, answer = self._new_order({
                    "newClientOrderId": req["orderLinkId"], "symbol": req["symbol"], "side": req["side"].upper(),
                    "type": req["orderType"].upper(), "quantity": req["qty"], "price": req.get("price", "0"),
                    "timeInForce": req.get("timeInForce", "GTC"),
                    "reduceOnly": str(req.get("reduceOnly", False)).lower(),
                    "positionSide": ("BOTH", "LONG", "SHORT")[int(req.get("positionIdx") or 0)]})
                if status == 503:
                    return 503, b"service unavailable"
                if status != 200:
                    return fail(*BYBIT_ERRORS.get(answer["code"], (10001, answer["msg"])))
                if not isinstance(answer, dict):
                    return status, answer
                return ok({"orderId": str(answer["orderId"]), "orderLinkId": req["orderLinkId"]})
            if path == "/v5/order/cancel":
                if not req.get("orderLinkId") and not req.get("orderId"):  # ccxt's clientOrderId is not translated
                    return fail(10001, "orderId or orderLinkId is required")
                stop = self.stops.get(req.get("orderLinkId"))
                if stop is not None and stop["algoStatus"] == "NEW":
                    stop.update(algoStatus="CANCELED", updateTime=int(time.time() * 1000))
                    return ok({"orderId": str(stop["algoId"]), "orderLinkId": stop["clientAlgoId"]})
                order = self._find(req.get("orderLinkId"), req.get("orderId"))
                if not self._cancel(order):
                    return fail(110001, "order not exists or too late to cancel")
                return ok({"orderId": str(order["orderId"]), "orderLinkId": order["clientOrderId"]})
            if path in ("/v5/order/realtime", "/v5/order/history"):
                # Asked by id, Bybit answers for any recent order; otherwise realtime lists working ones only.
                link, oid = q.get("orderLinkId"), q.get("orderId")
                stop = self.stops.get(link)
                if stop is not None and self._lagging(stop):
                    return ok({"category": "linear", "list": [], "nextPageCursor": ""})
                if stop is not None and not stop["actualOrderId"]:  # not triggered: Bybit's conditional view
                    return ok({"category": "linear", "list": [self._bybit_stop(stop)], "nextPageCursor": ""})
                if stop is not None:
                    found = [self.orders[f"{link}:triggered"]]
                elif link or oid:
                    found = [o for o in [self._lookup(self._find(link, oid), bool(link))] if o]
                elif path == "/v5/order/realtime":
                    found = self.open_orders + self._working()
                    found += [self._bybit_stop(s) for s in self.stops.values() if s["algoStatus"] == "NEW"]
                else:
                    found = [o for o in self.orders.values() if o["status"] not in WORKING]
                return ok({"category": "linear", "list": [o if "orderStatus" in o else self._bybit_order(o)
                                                          for o in found if symbol(o)],
                           "nextPageCursor": ""})
            if path == "/v5/execution/list":
                link, oid = q.get("orderLinkId"), q.get("orderId")
                orders = [self._find(link, oid)] if link or oid else [o for o in self.orders.values() if symbol(o)]
                return ok({"category": "linear", "list": [self._execution(o, t) for o, t in self._trades_of(orders)],
                           "nextPageCursor": ""})
            if path == "/v5/position/list":
                if not q.get("symbol") and not q.get("settleCoin"):
                    return fail(10001, "Either symbol or settleCoin is required")
                net = self.net_positions()
                syms = [q["symbol"]] if q.get("symbol") else [s for s, amt in net.items()
                                                              if amt and s.endswith(q["settleCoin"])]
                return ok({"category": "linear", "list": [self._bybit_position(s, net.get(s, 0.0)) for s in syms],
                           "nextPageCursor": ""})
        return fail(10001, f"{method} {path} not faked")

    def _bybit_stop(self, s):
        """A conditional order not triggered (or cancelled before it was) as Bybit lists it."""
        status = {"NEW": "Untriggered", "CANCELED": "Cancelled"}.get(s["algoStatus"], "Deactivated")
        return {"orderId": str(s["algoId"]), "orderLinkId": s["clientAlgoId"], "symbol": s["symbol"],
                "side": s["side"].capitalize(), "orderType": "Market", "price": "0", "qty": s["quantity"],
                "cumExecQty": "0", "cumExecValue": "0", "avgPrice": "", "cumExecFee": "0", "orderStatus": status,
                "timeInForce": "IOC", "reduceOnly": True, "triggerPrice": s["triggerPrice"],
                "triggerDirection": 2 if s["side"] == "SELL" else 1, "triggerBy": "MarkPrice",
                "stopOrderType": "Stop", "createdTime": str(s["createTime"]), "updatedTime": str(s["updateTime"]),
                "leavesQty": s["quantity"] if status == "Untriggered" else "0", "positionIdx": 0,
                "category": "linear"}

    def _new_stop(self, q, cid, bybit=False):
        """A stop-market order resting until the mark crosses its trigger price (reduce-only, as Vigil sends)."""
        self.order_posts.append(cid)
        fault = self.order_faults.pop(0) if self.order_faults else None
        kinds = set(fault) if isinstance(fault, tuple) else {fault}
        for code in kinds & {418, 429}:
            return code, {"code": -1003, "msg": "Too many requests."}
        if cid in self.stops or cid in self.orders:
            self.duplicate_posts.append(cid)
            return 400, {"code": -20132, "msg": "The client algo id is duplicated."}
        if q.get("type") != "STOP_MARKET" or q.get("reduceOnly") != "true" or not q.get("triggerPrice"):
            return 400, {"code": -1106, "msg": "this fake takes reduce-only STOP_MARKET orders only"}
        if self.on_order:
            self.on_order(cid, "received")
        ms = int(time.time() * 1000)
        stop = self.stops[cid] = {
            "algoId": 5000 + len(self.stops), "clientAlgoId": cid, "algoType": "CONDITIONAL",
            "orderType": "STOP_MARKET", "symbol": q["symbol"], "side": q["side"], "positionSide": "BOTH",
            "timeInForce": "GTC", "quantity": q["quantity"], "algoStatus": "NEW", "triggerPrice": q["triggerPrice"],
            "price": "0", "workingType": q.get("workingType", "CONTRACT_PRICE"), "reduceOnly": True,
            "closePosition": False, "priceProtect": False, "createTime": ms, "updateTime": ms, "triggerTime": 0,
            "actualOrderId": "", "actualPrice": "", "_trigger": float(q["triggerPrice"]), "_bybit": bybit,
            "_lag": self.lag_lookups if "lag" in kinds else 0}
        if self.on_order:
            self.on_order(cid, "stored")
        if 503 in kinds:
            return 503, {"code": -1001, "msg": "Internal error; unable to process your request."}
        return 200, _public(stop)

    def _trigger(self, stop):
        """The stop's market order: reduce-only, so never more than the position it closes holds."""
        held = self.net_positions().get(stop["symbol"], 0.0) * (1 if stop["side"] == "SELL" else -1)
        qty = min(float(stop["quantity"]), max(held, 0.0))
        ms = int(time.time() * 1000)
        if qty <= 0:  # nothing left to reduce: the venue expires the stop
            stop.update(algoStatus="EXPIRED", updateTime=ms)
            return
        # Bybit's triggered order keeps its id; Binance's algo order starts a new one in the matching engine
        order_id = stop["algoId"] if stop["_bybit"] else 90000 + len(self.orders)
        order = self.orders[f"{stop['clientAlgoId']}:triggered"] = {
            "orderId": order_id, "symbol": stop["symbol"], "clientOrderId": stop["clientAlgoId"],
            "status": "FILLED", "price": "0", "avgPrice": "0", "origQty": str(qty), "executedQty": "0",
            "cumQuote": "0", "timeInForce": "GTC", "type": "MARKET", "reduceOnly": True, "side": stop["side"],
            "positionSide": "BOTH", "updateTime": ms, "time": ms, "_trades": [], "_next": None, "_looks": 0,
            "_lag": 0}
        self._fill(order, qty)
        stop.update(algoStatus="FINISHED", actualOrderId=str(order_id), actualPrice=str(self.price),
                    triggerTime=ms, updateTime=ms)

    def _bybit_order(self, o):
        done, qty = float(o["executedQty"]), float(o["origQty"])
        status = {"NEW": "New", "PARTIALLY_FILLED": "PartiallyFilled", "FILLED": "Filled"}.get(o["status"]) or (
            "PartiallyFilledCanceled" if done else "Cancelled")
        fee = str(float(o.get("cumQuote") or 0) * 0.00055)
        return {"orderId": str(o["orderId"]), "orderLinkId": o["clientOrderId"], "symbol": o["symbol"],
                "side": o["side"].capitalize(), "orderType": o["type"].capitalize(), "price": o["price"],
                "qty": o["origQty"], "cumExecQty": o["executedQty"], "cumExecValue": o.get("cumQuote") or "0",
                "avgPrice": o["avgPrice"], "cumExecFee": fee, "cumFeeDetail": {"USDT": fee} if done else {},
                "orderStatus": status, "timeInForce": "IOC" if o["type"] == "MARKET" else o["timeInForce"],
                "reduceOnly": o.get("reduceOnly", False), "createdTime": str(o["time"]),
                "updatedTime": str(o["updateTime"]), "leavesQty": str(qty - done) if o["status"] in WORKING else "0",
                "positionIdx": {"LONG": 1, "SHORT": 2}.get(o.get("positionSide"), 0), "category": "linear"}

    def _execution(self, o, t):
        return {"symbol": o["symbol"], "orderId": str(o["orderId"]), "orderLinkId": o["clientOrderId"],
                "side": o["side"].capitalize(), "execPrice": str(t["price"]), "execQty": str(t["qty"]),
                "execFee": str(t["qty"] * t["price"] * 0.00055), "feeCurrency": "USDT", "execTime": str(t["time"]),
                "execId": str(uuid.UUID(int=t["id"])), "isMaker": False, "orderType": o["type"].capitalize(),
                "execType": "Trade", "execValue": str(t["qty"] * t["price"]), "feeRate": "0.00055"}

    def _bybit_position(self, sym, amt):
        idx = (1 if amt >= 0 else 2) if self.hedge_mode else 0  # hedge mode: one net row, on the side it leans
        now = str(int(time.time() * 1000))
        return {"symbol": sym, "side": "Buy" if amt > 0 else "Sell" if amt < 0 else "", "size": str(abs(amt)),
                "avgPrice": str(self.price if amt else 0), "positionValue": str(abs(amt) * self.price),
                "markPrice": str(self.price), "positionIdx": idx, "unrealisedPnl": "0", "cumRealisedPnl": "0",
                "leverage": "20", "tradeMode": 0, "createdTime": now, "updatedTime": now, "positionStatus": "Normal",
                "liqPrice": "", "positionIM": "0", "positionMM": "0", "riskId": 1, "autoAddMargin": 0}

    def net_positions(self):
        """Signed position per exchange symbol: what our filled orders built, plus any planted by hand."""
        net = dict(self.extra_positions)
        for o in self.orders.values():
            qty = float(o["executedQty"]) * (1 if o["side"] == "BUY" else -1)
            net[o["symbol"]] = round(net.get(o["symbol"], 0.0) + qty, 12)
        return net

    def _new_order(self, q):
        cid = q["newClientOrderId"]
        self.order_posts.append(cid)
        fault = self.order_faults.pop(0) if self.order_faults else None
        kinds = set(fault) if isinstance(fault, tuple) else {fault}
        for code in kinds & {418, 429}:
            return code, {"code": -1003, "msg": "Too many requests."}
        if "reject" in kinds:
            return 400, {"code": -2019, "msg": "Margin is insufficient."}
        if cid in self.orders:
            self.duplicate_posts.append(cid)
            return 400, {"code": -4116, "msg": "ClientOrderId is duplicated."}
        if (q.get("positionSide", "BOTH") != "BOTH") != self.hedge_mode:
            return 400, {"code": -4061, "msg": "Order's position side does not match user's setting."}
        if self.on_order:
            self.on_order(cid, "received")
        qty = float(q["quantity"])
        now_qty = 0.0 if kinds & {"new", "never"} else qty / 2 if kinds & PARTIAL else qty
        later = "fill" if kinds & {"new", "partial_then_fill"} else "expire" if "partial_then_expire" in kinds else None
        working = bool(later) or "never" in kinds
        if q["type"] == "LIMIT" and q.get("timeInForce") == "IOC":  # the book is at self.price: crosses or expires
            crosses = float(q["price"]) >= self.price if q["side"] == "BUY" else float(q["price"]) <= self.price
            now_qty, later, working = (now_qty, later, working) if crosses else (0.0, None, False)
        ms = int(time.time() * 1000)
        order = self.orders[cid] = {
            "orderId": len(self.orders) + 1000, "symbol": q["symbol"], "clientOrderId": cid, "status": "NEW",
            "price": q.get("price", "0"), "avgPrice": "0", "origQty": q["quantity"], "executedQty": "0",
            "cumQuote": "0", "timeInForce": q.get("timeInForce", "GTC"), "type": q["type"],
            "reduceOnly": q.get("reduceOnly") == "true", "side": q["side"],
            "positionSide": q.get("positionSide", "BOTH"), "updateTime": ms, "time": ms,
            "_trades": [], "_next": later, "_looks": 0, "_lag": self.lag_lookups if "lag" in kinds else 0}
        self._fill(order, now_qty)
        order["status"] = (("PARTIALLY_FILLED" if now_qty else "NEW") if working
                           else "FILLED" if now_qty == qty else "EXPIRED")
        if self.on_order:
            self.on_order(cid, "stored")
        if "timeout" in kinds:
            return 200, "timeout"
        if 503 in kinds:  # the worst 5xx: the engine took the order, the gateway failed the answer
            return 503, {"code": -1001, "msg": "Internal error; unable to process your request."}
        if "garbage" in kinds:
            return 200, b"<html>502 upstream</html>"
        return 200, _public(order)

    def _find(self, cid, order_id):
        if cid:
            return self.orders.get(cid)
        return next((o for o in self.orders.values() if str(o["orderId"]) == str(order_id)), None)

    def _lookup(self, order, by_client_id):
        """One status query: it lets time pass for the order, and a lagging index may not show it yet."""
        if order is None:
            return None
        order["_looks"] += 1
        if order["_next"] and order["_looks"] >= self.fill_after_lookups:
            self._step(order)
        if by_client_id and order["_lag"] > 0:
            order["_lag"] -= 1
            return None
        return order

    @staticmethod
    def _lagging(stop):
        """A lookup of a stop the venue's index does not show yet (one fewer next time)."""
        if stop["_lag"] <= 0:
            return False
        stop["_lag"] -= 1
        return True

    def _step(self, order):
        if order["_next"] == "fill":
            self._fill(order, float(order["origQty"]) - float(order["executedQty"]))
        order["status"] = "FILLED" if order["_next"] == "fill" else "EXPIRED"
        order["_next"] = None

    def _fill(self, order, qty):
        ms = int(time.time() * 1000)
        if qty > 0:
            order["_trades"].append({"id": next(self.trade_ids), "qty": qty, "price": self.price, "time": ms})
        done = sum(t["qty"] for t in order["_trades"])
        quote = sum(t["qty"] * t["price"] for t in order["_trades"])
        order.update(executedQty=str(done), cumQuote=str(quote), avgPrice=str(quote / done) if done else "0",
                     updateTime=ms)

    def _cancel(self, order):
        if order is None or order["status"] not in WORKING:
            return False
        order.update(status="CANCELED", _next=None, updateTime=int(time.time() * 1000))
        return True

    def _working(self):
        return [_public(o) for o in self.orders.values() if o["status"] in WORKING]

    def _trades_of(self, orders):
        return [(o, t) for o in orders if o for t in o["_trades"] for _ in range(1 + bool(self.duplicate_trades))]

    def _trade(self, order, t):
        return {"symbol": order["symbol"], "id": t["id"], "orderId": order["orderId"], "side": order["side"],
                "price": str(t["price"]), "qty": str(t["qty"]), "realizedPnl": "0", "marginAsset": "USDT",
                "quoteQty": str(t["qty"] * t["price"]), "commission": str(t["qty"] * t["price"] * 0.0005 / BNB_PRICE),
                "commissionAsset": "BNB", "time": t["time"], "positionSide": order["positionSide"],
                "buyer": order["side"] == "BUY", "maker": False}

    # --- WebSocket (RFC 6455, text frames, enough for ccxt.pro) -------------------------------------
    def _websocket(self, handler, path):
        key = handler.headers["Sec-WebSocket-Key"]
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        handler.send_response(101)
        handler.send_header("Upgrade", "websocket")
        handler.send_header("Connection", "Upgrade")
        handler.send_header("Sec-WebSocket-Accept", accept)
        handler.end_headers()
        handler.close_connection = True
        sock = handler.connection
        # the venue: its first subscription tells
        conn = {"venue": None, "topics": set(), "outbox": queue.Queue(), "n": next(self.conn_ids)}
        with self.lock:
            self.conns.append(conn)
        try:
            while not self.stopped.is_set():
                ready, _, _ = select.select([sock], [], [], 0.02)
                if ready:
                    frame = _read_frame(sock)
                    if frame is None:
                        break
                    opcode, payload = frame
                    if opcode == 8:
                        break
                    if opcode == 9:
                        _write_frame(sock, payload, 10)
                    elif opcode == 1 and payload == b"ping":  # OKX's text ping
                        _write_frame(sock, b"pong", 1)
                    elif opcode == 1:
                        self._ws_message(conn, sock, json.loads(payload))
                while not conn["outbox"].empty():
                    msg = conn["outbox"].get()
                    if msg is None:
                        _write_frame(sock, b"", 8)
                        return
                    _write_frame(sock, msg.encode(), 1)
        except OSError:
            pass
        finally:
            with self.lock:
                if conn in self.conns:
                    self.conns.remove(conn)

    def _ws_message(self, conn, sock, msg):
        if msg.get("method") == "SUBSCRIBE":
            self._subscribe(conn, "binance", msg["params"])
            _write_frame(sock, json.dumps({"result": None, "id": msg["id"]}).encode(), 1)
        elif msg.get("op") == "subscribe" and msg["args"] and isinstance(msg["args"][0], dict):  # OKX: one answer an arg
            self._subscribe(conn, "okx", [f"{a['channel']}:{a['instId']}" for a in msg["args"]])
            for arg in msg["args"]:
                _write_frame(sock, json.dumps({"event": "subscribe", "arg": arg, "connId": "c1"}).encode(), 1)
        elif msg.get("op") == "subscribe":
            self._subscribe(conn, "bybit", msg["args"])
            _write_frame(sock, json.dumps({"success": True, "ret_msg": "", "conn_id": "c1",
                                           "req_id": msg.get("req_id", ""), "op": "subscribe"}).encode(), 1)
        elif msg.get("op") == "ping":
            _write_frame(sock, json.dumps({"success": True, "ret_msg": "pong", "op": "ping",
                                           "req_id": msg.get("req_id", "")}).encode(), 1)

    def _subscribe(self, conn, venue, topics):
        with self.lock:
            conn["venue"] = venue
            conn["topics"].update(topics)
            self.subscribes.append((venue, conn["n"], list(topics)))


def _public(order):
    """The order as the exchange shows it, without the fake's own bookkeeping."""
    return {k: v for k, v in order.items() if not k.startswith("_")}


def _read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _read_frame(sock):
    head = _read_exact(sock, 2)
    if head is None:
        return None
    opcode, length = head[0] & 0x0F, head[1] & 0x7F
    if length == 126:
        length = struct.unpack(">H", _read_exact(sock, 2))[0]
    elif length == 127:
        length = struct.unpack(">Q", _read_exact(sock, 8))[0]
    mask = _read_exact(sock, 4) if head[1] & 0x80 else b"\0\0\0\0"
    payload = bytearray(_read_exact(sock, length) or b"")
    for i in range(len(payload)):
        payload[i] ^= mask[i % 4]
    return opcode, bytes(payload)


def _write_frame(sock, payload, opcode):
    n = len(payload)
    head = bytes([0x80 | opcode]) + (bytes([n]) if n < 126 else bytes([126]) + struct.pack(">H", n)
                                     if n < 65536 else bytes([127]) + struct.pack(">Q", n))
    sock.sendall(head + payload)


