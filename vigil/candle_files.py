"""Reads candle history files (Binance kline CSV dumps, plain, zipped or gzipped, and ccxt OHLCV JSON) and downloads
them with ccxt (paginated, rate-limited, resumable)."""
import array
import csv
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

from vigil.config import TIMEFRAME_MS
from vigil.schemas import TS

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
        data[symbol] = np.concatenate([c for _, c in chunks])
    missing = set(symbols or ()) - set(data)
    if missing:
        raise CandleFileError(f"{path}: no candles for {', '.join(sorted(missing))}")
    if not data:
        raise CandleFileError(f"{path}: no candle files in it (.csv or .json, each optionally .gz, or .zip)")
    for symbol, c in data.items():
        if not len(c):
            raise CandleFileError(f"{parts[symbol][0][0]}: no candles in it")
    return data


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


def client(exchange_id, url=None):
    import ccxt  # imported here: only this command needs the REST client
    ex = getattr(ccxt, exchange_id)({"enableRateLimit": True, "options": {"fetchMarkets": {"types": ["spot"]},
                                                                          "defaultType": "spot"}})
    if url:  # the public REST API through a proxy, a mirror or a test server
        ex.urls["api"]["public"] = url.rstrip("/")
    return ex


def download(ex, symbol, timeframe, since, until, out_dir, log=print):
    """Appends closed candles in [since, until) to OUT/BASEQUOTE-TF.csv, resuming after its last row."""
    step = TIMEFRAME_MS[timeframe]
    path = pathlib.Path(out_dir) / f"{symbol.replace('/', '')}-{timeframe}.csv"
    if path.exists() and path.stat().st_size:
        have = read_file(path)
        if len(have):
            since = max(since, int(have[-1, TS]) + step)  # resume: never a duplicate row
    until = min(until, (int(time.time() * 1000) // step) * step)  # only candles that have closed
    fresh = not path.exists() or not path.stat().st_size
    written = 0
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if fresh:
            w.writerow(HEADER)
        while since < until:
            rows = [r for r in ex.fetch_ohlcv(symbol, timeframe, since=since, limit=1000) if since <= r[0] < until]
            if not rows:
                break
            w.writerows([int(r[0]), *r[1:6], int(r[0]) + step - 1] for r in rows)
            f.flush()  # what is written survives an interruption: the next run resumes after it
            written += len(rows)
            since = int(rows[-1][0]) + step
    log(f"{symbol}: {written} candles written to {path}")
    return path, written
