import asyncio
import collections


from vigil import config, market_state
from vigil.sim import SimMarket
from vigil.market_state import Trend


def cfg_for(tmp_path, text=""):
    p = tmp_path / "v.cfg"
    p.write_text("[strategies]\nenabled =\n" + text)
    return config.load(p)


def run(market, n, each=None):
    async def go():
        for _ in range(n):
            now = await market.tick()
            if each:
                each(market, await market.feeds(now))
    asyncio.run(go())


def test_same_seed_same_market_other_seed_differs(tmp_path):
    a, b = SimMarket(cfg_for(tmp_path)), SimMarket(cfg_for(tmp_path))
    c = SimMarket(cfg_for(tmp_path, "[sim]\nseed = 8\n"))
    for m in (a, b, c):
        run(m, 200)
    ca, cb, cc = (m.candles()["data"]["bybit"]["ETH/USDT"] for m in (a, b, c))
    assert (ca == cb).all() and not (ca == cc).all()
    assert asyncio.run(a.feeds(0))["onchain"] == asyncio.run(b.feeds(0))["onchain"]


def test_bars_are_well_formed_and_advance_one_per_tick(tmp_path):
    cfg = cfg_for(tmp_path)
    m = SimMarket(cfg)
    t0 = m.candles()["ts"]
    run(m, 1500)
    assert m.candles()["ts"] - t0 == 1500 * 60_000
    for venue in ("binance", "bybit"):
        c = m.candles()["data"][venue]["SOL/USDT"]
        assert len(c) == cfg["market"]["history"]
        assert (c[:, 2] >= c[:, [1, 4]].max(axis=1)).all() and (c[:, 3] <= c[:, [1, 4]].min(axis=1)).all()
        assert (c[:, 5] > 0).all() and (c[1:, 0] - c[:-1, 0] == 60_000).all()
    assert m.bar("binance", "SOL/USDT")["ts"] == m.candles()["ts"] - 60_000


def test_all_regimes_funding_divergence_whales_and_extremes(tmp_path):
    cfg = cfg_for(tmp_path)
    m = SimMarket(cfg)
    seen, spreads, fng, ids = collections.defaultdict(set), [], [], collections.Counter()
    liq = []
    trend = Trend("binance", cfg["market_state"])

    def each(market, feeds):
        candles = market.candles()
        states = market_state.classify_all(candles, trend.update(candles), cfg["market"]["symbols"], "binance",
                                           cfg["market_state"])
        for s, v in states.items():
            seen[s].add(v["state"])
        f = feeds["funding"]["data"]["BTC/USDT"]
        ann = [x["rate"] * 24 / x["interval_h"] * 365 for x in f.values()]
        spreads.append(max(ann) - min(ann))
        fng.append(feeds["fear_greed"]["data"]["value"])
        ids.update(t["id"] for t in feeds["onchain"]["data"]["transfers"])
        liq.append(max(v["long_usd"] + v["short_usd"] for v in feeds["liquidations"]["data"].values()))
    run(m, 5000, each)
    for s in cfg["market"]["symbols"]:
        assert seen[s] >= {"trending", "ranging", "volatile"}, s
    assert max(spreads) > 0.2
    assert min(fng) <= 10 or max(fng) >= 90
    assert ids and max(ids.values()) > 1  # a transfer stays visible for several cycles
    assert max(liq) > 5e6


def test_twenty_symbols(tmp_path):
    syms = ", ".join(f"C{i}/USDT" for i in range(20))
    m = SimMarket(cfg_for(tmp_path, f"[market]\nsymbols = {syms}\n"))
    run(m, 50)
    assert len(m.candles()["data"]["binance"]) == 20
