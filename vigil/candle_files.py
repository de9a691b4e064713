"""Reads candle and funding history files (Binance kline CSV dumps, plain, zipped or gzipped, and ccxt OHLCV JSON) and
downloads them with ccxt into one folder per exchange and market type (paginated, rate-limited, resumable)."""
import array
import csv
import datetime
import gzip
import io
import itertools
import json
import math
import pathlib
import re
import time
import warnings
import zipfile
import zlib

import numpy as np

from vigil import venues
from vigil.config import TIMEFRAME_MS
from vigil.schemas import TS
from vigil.venues import CLIENTS

HEADER = ["open_time", "open", "high", "low", "close", "volume", "close_time"]


class CandleFileError(ValueError):
    """One line: FILE:LINE: what is wrong."""


def symbol_of(path):
    """BTCUSDT-1m-2025-01.csv.gz -> BTC/USDT; BTC_USDT-1m.json -> BTC/USDT."""
    name = pathlib.Path(path).name.split("-")[0].split(".")[0].upper()
    if "_" in name:
        base, quote = name.split("_")[:2]
        return f"{base}/{quote}"
    for quote in ("USDT", "USDC", "BUSD", "USD", "BTC", "ETH"):
        if name.endswith(quote) and len(name) > len(quote):
            return f"{name[:-len(quote)]}/{quote}"
    return name


def _text(path):
    """The file's text; utf-8-sig: a byte-order mark is not part of the first row."""
    path = pathlib.Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig")
    if path.suffix == ".zip":
        with zipfile.ZipFile(path) as z:
            inner = [n for n in z.namelist() if not n.endswith("/")]
            if not inner:
                raise CandleFileError(f"{path}: an empty zip archive")
            return io.StringIO(z.read(inner[0]).decode("utf-8-sig"))
    return open(path, encoding="utf-8-sig")


def read_file(path):
    """ndarray (n, 6): open time in ms, open, high, low, close, volume, checked row by row."""
    try:
        return _read(path)
    except (EOFError, OSError, zipfile.BadZipFile, zlib.error, UnicodeDecodeError) as e:
        raise CandleFileError(f"{path}: unreadable ({type(e).__name__}: {str(e)[:120]}): a damaged or "
                              "truncated file? download it again") from None


def _read(path):
    name = str(path)
    if re.search(r"\.json(\.gz)?$", name):
        with _text(path) as f:
            try:
                rows = json.load(f)
            except json.JSONDecodeError as e:
                raise CandleFileError(f"{name}:{e.lineno}: not valid JSON ({e.msg})") from None
        return _check(name, [(i + 1, r) for i, r in enumerate(rows)])
    with _text(path) as f:
        rows = ((i + 1, r) for i, r in enumerate(csv.reader(f)) if r)
        first = next(rows, None)
        if first is None:
            return np.empty((0, 6))
        header = not _is_number(first[1][0])  # the header line of newer dumps
    fast = _whole(path, first[0] if header else first[0] - 1)
    if fast is not None:
        return fast
    with _text(path) as f:  # something is wrong: the row-by-row check names the line
        rows = ((i + 1, r) for i, r in enumerate(csv.reader(f)) if r)
        return _check(name, itertools.islice(rows, 1, None) if header else rows)


def _whole(path, skip):
    """The file parsed in one go and checked as arrays, or None if any row is off (or the parser balks)."""
    with _text(path) as f, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a header alone is "no data": an empty file, not a problem
        try:
            a = np.loadtxt(f, delimiter=",", usecols=range(6), skiprows=skip, ndmin=2, comments=None).reshape(-1, 6)
        except ValueError:
            return None
    if not np.isfinite(a).all():
        return None
    ts = a[:, TS].astype(np.int64)
    a[:, TS] = np.where(ts > 10**14, ts // 1000, ts)  # microsecond timestamps (Binance dumps from 2025 on)
    o, h, l, c, v = a[:, 1:].T
    good = (l <= np.minimum(o, c)) & (h >= np.maximum(o, c)) & (l > 0) & (v >= 0)
    if not good.all() or (a[1:, 0] <= a[:-1, 0]).any():
        return None
    return a


def _is_number(s):
    try:
        float(s)
        return True
    except (TypeError, ValueError):
        return False


def _check(name, rows):
    """Streams rows into a flat array: a year of 1-minute rows never sits in memory as strings."""
    flat = array.array("d")
    prev = None
    for line, r in rows:
        try:
            if len(r) < 6:
                raise ValueError(f"expected at least 6 columns, got {len(r)}")
            ts = int(float(r[0]))
            values = [float(x) for x in r[1:6]]
        except (TypeError, ValueError, OverflowError) as e:  # OverflowError: an infinite time
            raise CandleFileError(f"{name}:{line}: bad row {r[:6]!r} ({e})") from None
        if ts > 10**14:
            ts //= 1000  # microsecond timestamps (Binance dumps from 2025 on)
        o, h, l, c, v = values
        if not all(map(math.isfinite, values)):  # nan compares false both ways: it would pass every check below
            raise CandleFileError(f"{name}:{line}: a value that is not a finite number: {r[1:6]!r}")
        if not (l <= min(o, c) and h >= max(o, c) and l > 0 and v >= 0):
            raise CandleFileError(f"{name}:{line}: inconsistent candle o={o} h={h} l={l} c={c} v={v}")
        if prev is not None and ts <= prev:
            what = "duplicate timestamp" if ts == prev else "timestamps out of order"
            raise CandleFileError(f"{name}:{line}: {what} {ts} after {prev}")
        prev = ts
        flat.extend((ts, o, h, l, c, v))
    return np.frombuffer(flat, dtype=float).reshape(-1, 6).copy()


def load(path, symbols=None):
    """{symbol: candles} from a file or a folder of files (daily or monthly dumps join in time order)."""
    path = pathlib.Path(path)
    if not path.exists():
        raise CandleFileError(f"{path}: no such file or folder")
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    parts = {}
    for f in files:
        # candles only: a freqtrade folder also holds trades, funding-rate and mark-price files
        if not re.search(r"\.(csv|json)(\.gz)?$|\.zip$", f.name) or re.search(r"-(trades|funding|mark)", f.name):
            continue
        symbol = symbol_of(f)
        if symbols and symbol not in symbols:
            continue
        parts.setdefault(symbol, []).append((f, read_file(f)))
    data = {}
    for symbol, chunks in parts.items():
        chunks.sort(key=lambda fc: fc[1][0, TS] if len(fc[1]) else 0)
        for (fa, a), (fb, b) in zip(chunks, chunks[1:]):
            if len(a) and len(b) and b[0, TS] <= a[-1, TS]:
                raise CandleFileError(f"{fb}:1: overlaps {fa} (starts at {int(b[0, TS])}, "
                                      f"which is not after {int(a[-1, TS])})")
        data[symbol] = np.concatenate([c for _, c in chunks]) if len(chunks) > 1 else chunks[0][1]  # no second year
    missing = set(symbols or ()) - set(data)
    if missing:
        raise CandleFileError(f"{path}: no candles for {', '.join(sorted(missing))}")
    if not data:
        raise CandleFileError(f"{path}: no candle files in it (.csv or .json, each optionally .gz, or .zip)")
    for symbol, c in data.items():
        if not len(c):
            raise CandleFileError(f"{parts[symbol][0][0]}: no candles in it")
    return data


def funding_files(path, symbols):
    """The funding histories (BASEQUOTE-funding.csv, as download writes them) beside a candle file or in a folder,
    of the symbols given."""
    path = pathlib.Path(path)
    folder = path if path.is_dir() else path.parent
    return sorted(f for f in folder.iterdir() if re.search(r"-funding\.(csv|json)(\.gz)?$", f.name)
                  and symbol_of(f) in symbols)


def day(ms):
    """A candle time (ms) as its UTC day and minute: 2025-01-31 23:59."""
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M")


def day_ms(text):
    """A UTC day, YYYY-MM-DD, as the ms time of its first minute."""
    return int(datetime.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)


def timeframe_of(candles):
    """The timeframe ('1m', '5m' ...) of a candle series by its most common step, or None if it is none of them."""
    step = int(np.median(np.diff(candles[:, TS]))) if len(candles) > 1 else 0
    return next((name for name, ms in TIMEFRAME_MS.items() if ms == step), None)


def gaps(candles, bar_ms):
    """[(first missing open time, bars missing)]: reported, never filled."""
    step = np.diff(candles[:, TS])
    where = np.nonzero(step > bar_ms)[0]
    return [(int(candles[i, TS] + bar_ms), int(step[i] // bar_ms - 1)) for i in where]


def read_funding(path):
    """[(ts, rate, interval_h)] from a CSV (timestamp,rate), ccxt funding-history JSON or OHLCV-shaped rows."""
    name = str(path)
    with _text(path) as f:
        if re.search(r"\.json(\.gz)?$", name):
            rows = json.load(f)
            rows = [(r["timestamp"], r["fundingRate"]) if isinstance(r, dict) else (r[0], r[1]) for r in rows]
        else:
            rows = [tuple(r[:2]) for r in csv.reader(f) if r]
            if rows and not _is_number(rows[0][0]):
                rows = rows[1:]
    try:
        points = [(int(float(ts)), float(rate)) for ts, rate in rows]
    except (TypeError, ValueError) as e:
        raise CandleFileError(f"{name}: bad funding row ({e})") from None
    points.sort()
    step = float(np.median(np.diff([p[0] for p in points]))) / 3_600_000 if len(points) > 1 else 8.0
    return [(ts, rate, step) for ts, rate in points]


def folder(exchange, market):
    """Where download writes one exchange's market type: OUT/binance-swap, OUT/okx-swap, OUT/binance-spot."""
    return f"{exchange}-{market}"


def venue(exchange, market):
    """The Vigil venue of an exchange's market type: a perpetual is the exchange's name, spot adds _spot."""
    return exchange if market == "swap" else f"{exchange}_spot"


def venue_of(path):
    """The venue a download folder (or a file in one) holds, read from its name; None for any other name."""
    path = pathlib.Path(path)
    found = re.fullmatch(r"([a-z0-9]+)-(spot|swap)", (path if path.is_dir() else path.parent).name)
    return venue(*found.groups()) if found else None


def client(exchange, market="swap", url=None):
    """A rate-limited ccxt REST client of an exchange's spot or USDT-margined perpetual markets."""
    import ccxt  # imported here: only this command needs the REST client
    name = venue(exchange, market)
    if market == "swap" and CLIENTS.get(name, (None, None, "spot"))[2] != "swap":
        raise ValueError(f"--market swap: perpetuals come from "
                         f"{', '.join(v for v, c in CLIENTS.items() if c[2] == 'swap')}, not {exchange}")
    if exchange not in ccxt.exchanges:
        raise ValueError(f"--exchange {exchange}: not an exchange ccxt knows")
    ex = venues.build(ccxt, *CLIENTS.get(name, (exchange, ["spot"], "spot")), {"enableRateLimit": True})
    if url:  # a proxy, a mirror or a test server: every endpoint keeps its path
        ex.urls["api"] = venues.override(ex.urls["api"], url, None, ex)
    return ex


def download(ex, symbol, timeframe, since, until, out_dir, log=print):
    """Appends what the venue has published in [since, until) to out_dir: closed candles (BASEQUOTE-TF.csv) and,
    for a perpetual, funding settlements (BASEQUOTE-funding.csv) and mark-price candles (BASEQUOTE-mark-TF.csv).

    Each file resumes after its last row. Returns {path: rows written}; raises CandleFileError when the venue
    lists no such market or has no candle of it in the range, so that nothing written never passes for success.
    """
    ex.load_markets()
    market = next((m for m in (symbol, venues.swap_symbol(symbol)) if m in ex.markets), None)
    if market is None:
        raise CandleFileError(f"{out_dir}: {ex.id} lists no market {symbol}: nothing downloaded for it")
    name, step = symbol.replace("/", ""), TIMEFRAME_MS[timeframe]
    now = int(time.time() * 1000)
    closed = min(until, now // step * step)  # the candle open now is not final yet
    per_page, rates_per_page = venues.PAGES.get(ex.id, (1000, 1000))

    def candles(params):
        def fetch(a, b):
            rows = ex.fetch_ohlcv(market, timeframe, since=a, limit=per_page, params={**params, "until": b - 1})
            return [[int(r[0]), *r[1:5], r[5] or 0, int(r[0]) + step - 1] for r in rows]  # mark candles: no volume
        return fetch

    def funding(a, b):
        # ccxt passes no end to OKX's funding history: its own 'after' (exclusive) bounds the window
        window = {"after": b} if ex.id == "okx" else {"until": b - 1}
        rows = ex.fetch_funding_rate_history(market, since=a, limit=rates_per_page, params=window)
        return [[int(r["timestamp"]), r["fundingRate"]] for r in rows if r["fundingRate"] is not None]

    out_dir = pathlib.Path(out_dir)
    written = {}
    path = out_dir / f"{name}-{timeframe}.csv"
    written[path] = _append(path, HEADER, read_file, candles({}), since, closed, step, per_page * step)
    if not _report(log, symbol, "candles", path, written[path], step):
        raise CandleFileError(f"{out_dir}: {ex.id} has no {market} candles in the range asked: nothing written")
    if ex.markets[market]["swap"]:
        path = out_dir / f"{name}-funding.csv"
        # settlements come at most hourly on these venues: a window of a page of hours holds at most a page
        written[path] = _append(path, ["timestamp", "rate"], read_funding, funding, since, min(until, now), 1,
                                rates_per_page * 3_600_000)
        log(f"{symbol}: {written[path]:,} funding settlements written to {path}")
        if ex.has.get("fetchMarkOHLCV"):
            path = out_dir / f"{name}-mark-{timeframe}.csv"
            written[path] = _append(path, HEADER, read_file, candles({"price": "mark"}), since, closed, step,
                                    per_page * step)
            if not _report(log, symbol, "mark-price candles", path, written[path], step):
                log(f"{symbol}: no mark-price candles in the range asked")
    return written


def _append(path, header, read, fetch, since, until, step, span):
    """Appends fetch(a, b)'s rows in [since, until), time first, to a CSV file after its last row; returns how many.

    Each request asks one window of at most a page of rows: a venue that answers a window newest first (Bybit,
    OKX) cannot leave its older part out. A window that ends early (a hole, or a shorter page) is asked again
    from its last row on; an empty one is passed. The file is created with its first row, never empty.
    """
    if path.exists() and path.stat().st_size:
        have = read(path)
        if len(have):
            since = max(since, int(have[-1][0]) + step)  # resume: never a duplicate row
    written, f = 0, None
    try:
        while since < until:
            end = min(since + span, until)
            rows = [r for r in fetch(since, end) if since <= r[0] < end]
            if rows:
                if f is None:
                    fresh = not path.exists() or not path.stat().st_size
                    f = open(path, "a", newline="")
                    out = csv.writer(f)
                    if fresh:
                        out.writerow(header)
                out.writerows(rows)
                f.flush()  # what is written survives an interruption: the next run resumes after it
                written += len(rows)
            since = rows[-1][0] + step if rows else end
    finally:
        if f:
            f.close()
    return written


def _report(log, symbol, what, path, written, step):
    """One line per candle file: rows written and the venue's own holes, which stay holes. Returns the rows it holds."""
    if not path.exists():
        return 0
    have = read_file(path)
    holes = gaps(have, step)
    where = (f"; {len(holes)} gaps in the venue's data ({sum(n for _, n in holes):,} bars, the first at "
             f"{day(holes[0][0])}), left as gaps") if holes else ""
    log(f"{symbol}: {written:,} {what} written to {path} ({len(have):,} in it, {day(have[0, TS])} to "
        f"{day(have[-1, TS])}){where}")
    return len(have)
