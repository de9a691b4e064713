import json
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from vigil import candle_files

ROOT = Path(__file__).resolve().parent.parent
DAY = 86_400_000
START = 1735689600000  # 2025-01-01


class FakeBinance:
    """Spot exchangeInfo and klines on 127.0.0.1, pages of at most 1000, with one missing hour."""

    def __init__(self):
        self.requests = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                url = urllib.parse.urlparse(self.path)
                q = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
                api.requests.append((url.path, q))
                if url.path.endswith("/exchangeInfo"):
                    body = {"timezone": "UTC", "serverTime": START, "rateLimits": [], "symbols": [{
                        "symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USDT",
                        "baseAssetPrecision": 8, "quotePrecision": 8, "quoteAssetPrecision": 8,
                        "orderTypes": ["LIMIT", "MARKET"], "isSpotTradingAllowed": True,
                        "isMarginTradingAllowed": False, "permissions": ["SPOT"], "filters": []}]}
                elif url.path.endswith("/klines"):
                    start, limit = int(q["startTime"]), int(q.get("limit", 500))
                    first = (start + 59_999) // 60_000 * 60_000
                    rows = []
                    for ts in range(first, first + 60_000 * 5000, 60_000):
                        if len(rows) == limit or ts >= START + 3 * DAY:
                            break
                        if START + DAY + 3_600_000 <= ts < START + DAY + 7_200_000:
                            continue  # the exchange has a hole here: it must stay a hole
                        p = 100 + (ts // 60_000) % 50
                        rows.append([ts, str(p), str(p + 1), str(p - 1), str(p + 0.5), "3.5", ts + 59_999,
                                     "350", 10, "1", "100", "0"])
                    body = rows
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/api/v3"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def run(tmp_path, url, end):
    return subprocess.run([sys.executable, "run.py", "download", "--exchange", "binance", "--symbols", "BTC/USDT",
                           "--from", "2025-01-01", "--to", end, "--out", str(tmp_path / "data"), "--url", url],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_download_paginates_resumes_and_backtest_reads_it(tmp_path):
    fake = FakeBinance()
    try:
        first = run(tmp_path, fake.url, "2025-01-02")
        assert first.returncode == 0, first.stderr
        pages = [q for p, q in fake.requests if p.endswith("/klines")]
        assert len(pages) >= 2  # 1440 candles need two pages of 1000
        again = run(tmp_path, fake.url, "2025-01-03")  # resumes after the last row, no duplicates
        assert again.returncode == 0, again.stderr
        assert int([q for p, q in fake.requests if p.endswith("/klines")][len(pages)]["startTime"]) == START + DAY
    finally:
        fake.close()
    data = candle_files.load(tmp_path / "data")["BTC/USDT"]
    assert len(data) == 2 * 1440 - 60 and data[0, 0] == START and data[-1, 0] == START + 2 * DAY - 60_000
    assert candle_files.gaps(data, 60_000) == [(START + DAY + 3_600_000, 60)]
