"""Builds lean ccxt clients for Vigil's venues (live and paper ones on ccxt.pro), with base-URL overrides."""
import os
import re

# venue -> (ccxt class, the same name in ccxt.pro; market types load_markets may fetch; default type)
CLIENTS = {"binance": ("binanceusdm", ["linear"], "swap"), "binance_spot": ("binance", ["spot"], "spot"),
           "bybit": ("bybit", ["linear"], "swap"), "okx": ("okx", ["swap"], "swap")}

# Topics one WebSocket subscribe request names, as each venue allows: Binance takes up to 1024 streams on a
# connection and 10 requests a second (ccxt puts at most 200 liquidation streams on one), Bybit v5 10 args a
# request, OKX any number within 64 KB (about 1,100 candle channels; it allows 480 requests an hour).
SUBSCRIBE_BATCH = {"binance": 200, "binance_spot": 200, "bybit": 10, "okx": 1000}
# ccxt id -> (candles, funding settlements) one request asks for: each venue's page (ccxt caps Binance at 1,000).
# Bybit and OKX answer a window newest first, so a window asked wider than a page would lose its older rows.
PAGES = {"binanceusdm": (1000, 1000), "binance": (1000, 1000), "bybit": (1000, 200), "okx": (100, 100)}


def swap_symbol(symbol):
    """Config 'BTC/USDT' -> the ccxt unified USDT-margined perpetual 'BTC/USDT:USDT'."""
    return f"{symbol}:{symbol.split('/')[1]}"


def market_symbol(venue, symbol):
    """The ccxt symbol a venue trades a config symbol as: spot as is, perpetuals with their settle currency."""
    return symbol if CLIENTS[venue][2] == "spot" else swap_symbol(symbol)


def client(cfg, venue, timeout_s, throttled=True, keys=False):
    """One async client per venue; only its perpetual markets are loaded, so start-up stays lean.

    throttled=False is for the one bulk request per venue per cycle: ccxt's limiter would delay each of them
    by its full rate-limit interval, while a 60 s heartbeat stays far below every venue's limit anyway.
    """
    import ccxt.pro  # the one place ccxt is imported for market data
    ex = build(ccxt.pro, *CLIENTS[venue], {"enableRateLimit": throttled, "timeout": int(timeout_s * 1000)})
    section = cfg.get(f"venue.{venue}", {})
    if keys:  # live trading: keys from the environment, never from the config file
        ex.apiKey = os.environ.get(section["key_env"], "")
        ex.secret = os.environ.get(section["secret_env"], "")
        ex.options["adjustForTimeDifference"] = True  # signed requests use the venue's clock, read at start
        if section["testnet"]:
            ex.set_sandbox_mode(True)
    if section.get("rest_url") or section.get("ws_url"):
        ex.urls["api"] = override(ex.urls["api"], section.get("rest_url"), section.get("ws_url"), ex)
    return ex


def build(module, name, types, default, settings):
    """A ccxt (or ccxt.pro) client of class name that loads only the market types given."""
    ex = getattr(module, name)({**settings, "options": {"defaultType": default, "fetchMarkets": {"types": types},
                                                        "fetchCurrencies": False}})  # markets are all we need
    ex.has["fetchCurrencies"] = False  # bybit ignores the option above and asks a private asset endpoint
    return ex


def override(node, rest, ws, ex):
    """Replaces scheme and host of every endpoint: a proxy, a testnet mirror or a test server."""
    if isinstance(node, dict):
        return {k: override(v, rest, ws, ex) for k, v in node.items()}
    if not isinstance(node, str):
        return node
    url = ex.implode_hostname(node)
    base = ws if url.startswith("ws") else rest
    return re.sub(r"^[a-z]+://[^/]+", base.rstrip("/"), url) if base else node
