"""Loads vigil.cfg into a typed dict, checking every key against one table of types, ranges and defaults."""
import configparser
import difflib
import importlib
import os
import pathlib

from vigil.venues import CLIENTS

TIMEFRAME_MS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000}

INTS = "integers"  # a comma-separated list of integers, such as Telegram chat ids

# (type, default, low, high, help). type: int, float, bool, str, list, or a tuple of choices.
# Strategy sections are not here: each strategy module declares its own PARAMS in this same form,
# so adding or deleting a strategy touches only its file and the config.
TABLE = {
    "vigil": {
        "mode": (("sim", "paper", "live"), "sim", None, None, "sim, paper or live"),
        "db": (str, "vigil.db", None, None, "sqlite file"),
        "interval": (float, 60.0, 0.0, 86400.0, "seconds between cycle starts"),
        # short: the source waits for the trade venue's closed candle by itself; this is the other venues' head
        # start (at 1.0 the close to first order took 1.1 s in bench/latency.py, its target is under 1 s)
        "settle_s": (float, 0.2, 0.0, 30.0, "seconds after a candle closes before its cycle starts"),
        "latency_alert_s": (float, 5.0, 0.1, 3600.0, "candle close to decision above this is alerted"),
        "starting_equity": (float, 10000.0, 1.0, 1e12, "quote currency equity of a fresh db"),
        "console": (bool, True, None, None, "print one line per cycle"),
        "log_file": (str, "", None, None, "rotating log file; empty: console only"),
        "log_level": (("DEBUG", "INFO", "WARNING", "ERROR"), "INFO", None, None, "log level"),
        "log_max_bytes": (int, 10_000_000, 10_000, 10**10, "log file size before it rotates"),
        "log_backups": (int, 5, 1, 100, "rotated log files kept"),
        "retention_days": (int, 30, 1, 3650, "days of cycle, proposal, verdict and equity rows kept"),
    },
    "market": {
        "venues": (list, ["binance", "bybit"], None, None,
                   "venues for data and orders: binance (USD-M perpetuals), binance_spot, bybit (linear)"),
        "symbols": (list, ["BTC/USDT", "ETH/USDT", "SOL/USDT"], None, None, "base/quote pairs"),
        "trade_venue": (str, "binance", None, None, "venue for directional trades"),
        "timeframe": (tuple(TIMEFRAME_MS), "1m", None, None, "candle timeframe"),
        "history": (int, 300, 50, 5000, "candles kept per symbol"),
        "stale_after": (float, 180.0, 1.0, 86400.0, "seconds after which a feed is stale"),
    },
    "sim": {
        "seed": (int, 7, 0, 2**31 - 1, "same seed, same market"),
        "start_time": (int, 1735689600000, 0, 2**62, "ms timestamp of the first bar"),
        "fng_every": (int, 60, 1, 10000, "bars between Fear & Greed updates (daily in reality)"),
    },
    "market_state": {
        "adx_period": (int, 14, 2, 100, "ADX and ATR period in bars"),
        "adx_trending": (float, 30.0, 5.0, 80.0, "ADX at or above this is trending"),
        "vol_short": (int, 10, 3, 200, "bars of the short realized volatility"),
        "vol_long": (int, 60, 10, 1000, "bars of the long realized volatility"),
        "vol_ratio_volatile": (float, 1.6, 1.0, 10.0, "short/long volatility at or above this is volatile"),
        "atr_pct_volatile": (float, 0.5, 0.01, 50.0, "ATR as % of price at or above this is volatile"),
    },
    "strategies": {
        "enabled": (list, None, None, None, "strategy modules to run (default: every one there is)"),
    },
    "risk": {
        "risk_per_trade": (float, 0.005, 0.0001, 0.1, "equity fraction lost if the stop is hit"),
        "max_position": (float, 0.25, 0.001, 10.0, "notional of one position / equity"),
        "max_symbol": (float, 0.5, 0.001, 10.0, "notional on one symbol / equity"),
        "max_gross": (float, 2.0, 0.001, 20.0, "sum of |notional| / equity"),
        "max_net": (float, 1.0, 0.0, 20.0, "|long - short| notional / equity"),
        "max_open_positions": (int, 6, 1, 1000, "open positions at once"),
        "daily_loss": (float, 0.03, 0.001, 1.0, "UTC-day loss / equity that blocks new entries"),
        "min_notional": (float, 10.0, 0.0, 1e9, "smallest order notional"),
        "venue_stops": (bool, True, None, None,
                        "keep each directional position's stop resting at the venue as a reduce-only stop order"),
    },
    "feeds": {
        "funding_venues": (list, ["binance", "bybit", "okx"], None, None, "venues whose funding is compared"),
        "timeout": (float, 5.0, 0.1, 60.0, "seconds one request may take"),
        "fear_greed_url": (str, "https://api.alternative.me/fng/", None, None, "Fear & Greed API (alternative.me)"),
        "etherscan_url": (str, "https://api.etherscan.io/api", None, None, "Etherscan-compatible API"),
        "etherscan_key_env": (str, "ETHERSCAN_API_KEY", None, None, "environment variable holding the API key"),
        "wallets": (list, [], None, None, "tracked wallets as address:label"),
        "exchange_labels": (list, ["binance", "bybit", "okx", "coinbase", "kraken"], None, None,
                            "labels that mark a wallet as an exchange's"),
        "whale_alert_url": (str, "https://api.whale-alert.io/v1/transactions", None, None, "Whale Alert API"),
        "whale_alert_key_env": (str, "WHALE_ALERT_API_KEY", None, None, "environment variable holding its key"),
        "whale_alert_min_usd": (float, 1_000_000.0, 500_000.0, 1e12, "smallest transfer asked for (USD)"),
        "social_url": (str, "https://lunarcrush.com/api4/public/coins/list/v2", None, None,
                       "LunarCrush coin list (social volume)"),
        "social_key_env": (str, "LUNARCRUSH_API_KEY", None, None, "environment variable holding its key"),
        "window_s": (int, 3600, 60, 86400, "on-chain transfers kept in the feed (seconds)"),
        "liquidation_window_s": (int, 300, 10, 86400, "liquidations summed over this window (seconds)"),
    },
    **{f"venue.{venue}": {
        "rest_url": (str, "", None, None, "REST base URL override (proxy, mirror); empty: ccxt's"),
        "ws_url": (str, "", None, None, "WebSocket base URL override; empty: ccxt's"),
        "key_env": (str, f"{venue.split('_')[0].upper()}_API_KEY", None, None,
                    "environment variable holding the API key (live only)"),
        "secret_env": (str, f"{venue.split('_')[0].upper()}_API_SECRET", None, None,
                       "environment variable holding the API secret (live only)"),
        "testnet": (bool, False, None, None, "use the venue's testnet or demo environment"),
    } for venue in ("binance", "binance_spot", "bybit", "okx")},
    "live": {
        "reconcile_every": (int, 10, 1, 100000, "cycles between reconciliations with the exchanges"),
        "balance_tolerance": (float, 10.0, 0.0, 1e9, "USDT of wallet change Vigil's books cannot explain "
                                                      "before a fall halts trading (a rise is reported)"),
    },
    "telegram": {
        "enabled": (bool, False, None, None, "run the Telegram bot"),
        "token_env": (str, "VIGIL_TELEGRAM_TOKEN", None, None, "environment variable holding the bot token"),
        "api_url": (str, "https://api.telegram.org", None, None, "Bot API server (self-hosted ones work too)"),
        "chat_ids": (INTS, [], None, None, "chats allowed to command and to receive alerts"),
        "user_ids": (INTS, [], None, None, "users allowed to command (both chat and user must match)"),
        "allow_groups": (bool, False, None, None, "accept commands in group chats"),
        "poll_timeout": (int, 10, 0, 60, "long-poll seconds of getUpdates"),
        "daily_summary_hour": (int, 8, 0, 23, "UTC hour of the daily summary"),
    },
    "fills": {
        "taker_fee": (float, 0.0005, 0.0, 0.01, "taker fee rate"),
        "slippage_bps": (float, 1.0, 0.0, 1000.0, "base slippage in basis points"),
        "impact": (float, 0.003, 0.0, 0.1, "extra slippage x square root of the bar volume share taken"),
        "max_participation": (float, 0.1, 0.001, 1.0, "share of bar volume one order can take"),
    },
}



class ConfigError(Exception):
    """One line naming section and key; run.py exits 2 with it."""


def load(path, extra_sections=None):
    """Reads path and returns {section: {key: value}} with every key typed and defaulted."""
    parser = configparser.ConfigParser(interpolation=None, strict=True, default_section="\0none")
    parser.optionxform = str
    try:
        with open(path, encoding="utf-8-sig") as f:  # -sig: a byte-order mark some editors add is not a key
            parser.read_file(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: a folder, not a config file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}): save it as UTF-8") from None
    except configparser.Error as e:
        raise ConfigError(f"{path}: {' '.join(str(e).split())}") from None
    table = dict(TABLE)
    table.update(extra_sections or {})
    enabled = _parse(parser, {"strategies": table["strategies"]})["strategies"]["enabled"]
    if enabled is None:  # not set: every strategy module there is, so deleting one breaks no config
        enabled = installed()
        table["strategies"] = {"enabled": (list, enabled, None, None, "")}
    for name in enabled:
        table[name] = _strategy_params(name, f"[strategies] enabled: '{name}'")
    for section in parser.sections():
        if section not in table:  # settings of a strategy that is present but switched off
            table[section] = _strategy_params(section, f"[{section}]: unknown section{_closest(section, table)}")
    cfg = _parse(parser, table)
    _agree(cfg)
    return cfg


def _agree(cfg):
    """The rules between keys: each key is valid alone, and together they must describe one runnable setup."""
    market, need = cfg["market"], {}
    for section, key in (("market", "venues"), ("market", "symbols"), ("strategies", "enabled"),
                         ("feeds", "funding_venues")):
        items = cfg[section][key]
        if section == "market" and not items:  # no strategy at all is allowed: a run that only watches
            raise ConfigError(f"[{section}] {key}: empty: name at least one")
        twice = sorted({x for x in items if items.count(x) > 1})
        if twice:
            raise ConfigError(f"[{section}] {key}: {', '.join(twice)} named twice")
    for section, key, names in (("market", "venues", CLIENTS), ("feeds", "funding_venues", CLIENTS)):
        unknown = [v for v in cfg[section][key] if v not in names]
        if unknown:
            raise ConfigError(f"[{section}] {key}: unknown venue '{unknown[0]}'{_closest(unknown[0], names)}; "
                              f"known: {', '.join(names)}")
    if market["trade_venue"] not in market["venues"]:
        raise ConfigError(f"[market] trade_venue: '{market['trade_venue']}' is not among [market] venues "
                          f"({', '.join(market['venues'])})")
    for symbol in market["symbols"]:
        base, _, quote = symbol.partition("/")
        if not base or not quote or "/" in quote:
            raise ConfigError(f"[market] symbols: '{symbol}' is not BASE/QUOTE (like BTC/USDT)")
    # the longest window anything reads: the market state's, and each enabled strategy's warm-up if it has one
    ms = cfg["market_state"]
    need["[market_state] adx_period, vol_long"] = max(2 * ms["adx_period"] + 10, ms["vol_long"] + 2, ms["vol_short"] + 2)
    for name in cfg["strategies"]["enabled"]:
        warmup = getattr(importlib.import_module(f"vigil.{name}"), "warmup", None)
        if warmup:
            need[f"[{name}]'s windows"] = warmup(cfg[name])
    what, bars = max(need.items(), key=lambda item: item[1])
    if market["history"] < bars:
        raise ConfigError(f"[market] history: {market['history']} candles are fewer than the {bars} that {what} "
                          "needs: raise history")
    if cfg["telegram"]["enabled"] and not (cfg["telegram"]["chat_ids"] and cfg["telegram"]["user_ids"]):
        raise ConfigError("[telegram] chat_ids, user_ids: the bot is enabled but nobody may command it")
    folder = os.path.dirname(os.path.abspath(cfg["vigil"]["log_file"])) if cfg["vigil"]["log_file"] else None
    if folder and not os.path.isdir(folder):
        raise ConfigError(f"[vigil] log_file: its folder {folder} does not exist")


def table_of(cfg):
    """The key table a loaded config was checked against: TABLE and each strategy section's PARAMS."""
    table = dict(TABLE)
    for section in cfg:
        if section not in table:
            table[section] = _strategy_params(section, f"[{section}]")
    return table


def installed():
    """The strategy modules there are, by name: every vigil/*.py that defines propose(ctx)."""
    return sorted(p.stem for p in pathlib.Path(__file__).parent.glob("*.py")
                  if "\ndef propose(" in p.read_text(encoding="utf-8"))


def _strategy_params(name, error):
    try:
        module = importlib.import_module(f"vigil.{name}")
    except ImportError:
        module = None
    if not callable(getattr(module, "propose", None)):
        raise ConfigError(f"{error} is not a strategy module" if error.endswith("'") else error)
    return getattr(module, "PARAMS", {})


def _parse(parser, table):
    cfg = {}
    for section, keys in table.items():
        given = parser[section] if parser.has_section(section) else {}
        for key in given:
            if key not in keys:
                raise ConfigError(f"[{section}] {key}: unknown key{_closest(key, keys)}")
        cfg[section] = {k: value(section, k, spec, given.get(k)) for k, spec in keys.items()}
    return cfg


def _closest(word, choices):
    near = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{near[0]}'?)" if near else ""


def value(section, key, spec, raw):
    kind, default, low, high, _ = spec
    if raw is None:
        return list(default) if isinstance(default, list) else default
    raw = raw.strip()
    where = f"[{section}] {key}"
    if isinstance(kind, tuple):
        if raw not in kind:
            raise ConfigError(f"{where}: '{raw}' is not one of {', '.join(kind)}")
        return raw
    if kind is bool:
        low_raw = raw.lower()
        if low_raw in ("true", "yes", "on", "1"):
            return True
        if low_raw in ("false", "no", "off", "0"):
            return False
        raise ConfigError(f"{where}: '{raw}' is not true or false")
    if kind is list:
        return [item.strip() for item in raw.split(",") if item.strip()]
    if kind is INTS:
        try:
            return [int(item) for item in raw.split(",") if item.strip()]
        except ValueError:
            raise ConfigError(f"{where}: '{raw}' is not a comma-separated list of integers") from None
    if kind is str:
        return raw
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{where}: '{raw}' is not {'an integer' if kind is int else 'a number'}") from None
    if value != value or (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"{where}: {raw} is outside {low}..{high}")
    return value


# What a running Vigil can take from an edited file between two cycles; anything else needs a restart.
LIVE = {"risk": None, "fills": None, "live": None,
        "market_state": {"adx_trending", "vol_ratio_volatile", "atr_pct_volatile"}}


def differences(old, new):
    """(live, restart): the keys whose value differs, as ("[section] key", old, new), split into those a running
    Vigil can apply between cycles (risk, fills, live, the running strategies' settings, the market-state
    thresholds) and those that need a restart."""
    live, restart = [], []
    running = set(old["strategies"]["enabled"])
    for section in sorted(set(old) | set(new)):
        before, after = old.get(section, {}), new.get(section, {})
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                keys = LIVE.get(section, ())
                applies = section in running or section in LIVE and (keys is None or key in keys)
                (live if applies else restart).append((section, key, before.get(key), after.get(key)))
    return live, restart
