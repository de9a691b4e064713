"""Downloads candle history with ccxt (paginated, rate-limited, resumable) into Binance-style CSV files."""
import csv
import pathlib
import time

from vigil import candle_files
from vigil.config import TIMEFRAME_MS

HEADER = ["open_time", "open", "high", "low", "close", "volume", "close_time"]


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
        have = candle_files.read_file(path)
        if len(have):
            since = max(since, int(have[-1, 0]) + step)  # resume: never a duplicate row
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
