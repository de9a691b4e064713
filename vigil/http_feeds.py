"""Fetches the plain-HTTP feeds (Fear & Greed, wallet transfers, Whale Alert, social volume) with the stdlib."""
import asyncio
import json
import time
import urllib.parse
import urllib.request


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
