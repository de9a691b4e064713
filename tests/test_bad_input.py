"""Bad input from every surface, as `run.py` meets it: one line naming the problem, the documented exit code, no
traceback, and any database involved unchanged."""
import csv
import hashlib
import json
import math
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vigil import candle_files

ROOT = Path(__file__).resolve().parent.parent


def run(tmp_path, *args, config=None):
    cfg = tmp_path / "v.cfg"
    if not cfg.exists():
        cfg.write_text(config or f"[vigil]\ndb = {tmp_path}/v.db\nconsole = false\n")
    return subprocess.run([sys.executable, "run.py", "--config", str(cfg), *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if Path(path).exists() else None


def sim_db(tmp_path):
    assert run(tmp_path, "--cycles", "3", "--interval", "0").returncode == 0
    return tmp_path / "v.db"


def newer_schema(tmp_path):
    conn = sqlite3.connect(tmp_path / "v.db")
    conn.execute("PRAGMA user_version=999")
    conn.close()
    return tmp_path / "v.db"


def not_sqlite(tmp_path):
    (tmp_path / "v.db").write_text("open_time,open,high\n1,2,3\n")
    return tmp_path / "v.db"


CASES = [  # (name, setup(tmp_path) -> database or None, arguments, config or None, exit code, message)
    ("report without a database", None, ["report"], None, 2, "no database at"),
    ("replay without a database", None, ["replay", "--cycle", "1"], None, 2, "no database at"),
    ("backup without a database", None, ["backup", "/tmp/x.db"], None, 2, "no database at"),
    ("report on a file that is not sqlite", not_sqlite, ["report"], None, 2, "is not a sqlite database"),
    ("run on a file that is not sqlite", not_sqlite, ["--cycles", "1"], None, 2, "is not a sqlite database"),
    ("report on a newer schema", newer_schema, ["report"], None, 2, "comes from a newer Vigil"),
    ("a database folder that does not exist", None, ["--cycles", "1"], "[vigil]\ndb = /nonexistent/dir/v.db\n", 2,
     "its folder is missing"),
    ("an empty db", None, ["--cycles", "1"], "[vigil]\ndb =\n", 2, "[vigil] db: empty"),
    ("--interval nan", None, ["--interval", "nan"], None, 2, "--interval"),
    ("backtest --db on a session's database", sim_db,
     ["backtest", "--data", "{data}", "--db", "{db}"], None, 2, "not a backtest's database"),
    # candle files and folders
    ("an empty candle file", None, ["backtest", "--data", "{empty}"], None, 2, "no candles in it"),
    ("a header and no candle", None, ["backtest", "--data", "{header}"], None, 2, "no candles in it"),
    ("a truncated archive", None, ["backtest", "--data", "{truncated}"], None, 2, "unreadable"),
    ("a folder without candle files", None, ["backtest", "--data", "{folder}"], None, 2, "no candle files in it"),
    ("a path that does not exist", None, ["backtest", "--data", "{tmp}/nope"], None, 2, "no such file or folder"),
    ("dates outside the data", None, ["backtest", "--data", "{data}", "--from", "2031-01-01"], None, 2,
     "the data covers 1970-01-01"),
    ("a date that is no date", None, ["backtest", "--data", "{data}", "--from", "2031-13-45"], None, 2, "2031-13-45"),
    ("5m candles under a 1m config", None, ["backtest", "--data", "{five}"], None, 2,
     "holds 5m candles, not 1m: set [market] timeframe = 5m"),
    ("fewer candles than the warm-up", None, ["backtest", "--data", "{short}"], None, 2,
     "not more than the 300 of [market] history"),
    ("perpetuals from an exchange download does not take them from", None,
     ["download", "--exchange", "kraken", "--symbols", "BTC/USDT", "--from", "2025-01-01"], None, 2,
     "--market swap: perpetuals come from binance, bybit, okx, not kraken"),
    ("an exchange ccxt does not know", None,
     ["download", "--exchange", "krakn", "--market", "spot", "--symbols", "BTC/USDT", "--from", "2025-01-01"], None,
     2, "--exchange krakn: not an exchange ccxt knows"),
]


def candle_cases(tmp_path):
    """The files the candle cases name, by placeholder."""
    import gzip
    rows = "".join(f"{i * 60_000},100,101,99,100,5\n" for i in range(400))
    files = {"empty": "", "header": "open_time,open,high,low,close,volume\n",
             "five": "".join(f"{i * 300_000},100,101,99,100,5\n" for i in range(400)),
             "short": "".join(f"{i * 60_000},100,101,99,100,5\n" for i in range(100))}
    out = {"tmp": tmp_path}
    for name, text in files.items():
        (tmp_path / name).mkdir()
        out[name] = tmp_path / name / "BTCUSDT-1m.csv"
        out[name].write_text(text)
    out["truncated"] = tmp_path / "BTCUSDT-1m.csv.gz"
    out["truncated"].write_bytes(gzip.compress(rows.encode())[:-30])
    out["folder"] = tmp_path / "folder"
    out["folder"].mkdir()
    (out["folder"] / "notes.txt").write_text("nothing here")
    return out


@pytest.mark.parametrize("name,setup,args,config,code,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(tmp_path, name, setup, args, config, code, message):
    db = setup(tmp_path) if setup else tmp_path / "v.db"
    before = digest(db)
    data = tmp_path / "BTCUSDT-1m.csv"
    data.write_text("".join(f"{i * 60_000},100,101,99,100,5\n" for i in range(400)))
    files = candle_cases(tmp_path)
    out = run(tmp_path, *[a.format(data=data, db=db, **files) for a in args], config=config)
    assert out.returncode == code, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in out.stderr, out.stderr
    assert digest(db) == before


def test_version_a_clean_backtest_and_a_log_friendly_progress(tmp_path):
    version = run(tmp_path, "--version")
    assert version.returncode == 0 and version.stdout.startswith("vigil 0.9.0 (code ")
    data = tmp_path / "BTCUSDT-1m.csv"
    data.write_text("".join(f"{i * 60_000},{100 + i % 3},{102 + i % 3},{98 + i % 3},{101 + i % 3},5\n"
                            for i in range(3000)))
    out = subprocess.run([sys.executable, str(ROOT / "run.py"), "--config", str(tmp_path / "v.cfg"), "backtest",
                          "--data", str(data)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["BTCUSDT-1m.csv", "v.cfg"]  # nothing left behind
    assert "\r" not in out.stderr and "100.0%" in out.stderr.splitlines()[-1]  # a log gets plain lines
    assert out.stdout.startswith("1970-01-01 00:00 to 1970-01-03 01:59, 1m candles of BTC/USDT on binance")
    assert "mode backtest" in out.stdout
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert not [f for f in tracked if f.endswith((".lock", ".db", ".csv", ".log"))]  # no runtime file is tracked


CELL = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10, 2 * 10**15),
                 st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=4),
                 st.sampled_from(["", "nan", "-inf", "1e400", "0x10", "1_0", " 7 "]))


def oracle(rows):
    """What the reader must answer for these rows, worked out independently: ("error", line) of the first bad
    one, or ("ok", candles)."""
    out, prev = [], None
    for line, r in enumerate(rows, 1):
        if not r:
            continue  # a blank line is no row
        try:
            ts, *values = [float(x) for x in r[:6]]
            assert len(r) >= 6
            ts = int(ts)
        except (ValueError, AssertionError, OverflowError):
            return "error", line
        ts = ts // 1000 if ts > 10**14 else ts
        o, h, low, c, v = values
        if not all(math.isfinite(x) for x in values) or not (low <= min(o, c) and h >= max(o, c) and low > 0
                                                               and v >= 0) or (prev is not None and ts <= prev):
            return "error", line
        prev = ts
        out.append([ts, o, h, low, c, v])
    return "ok", out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(CELL, max_size=8), max_size=4), st.lists(st.integers(0, 12), min_size=4, max_size=4))
def test_a_malformed_row_is_rejected_with_its_line_or_the_file_is_read_exactly(tmp_path, bad, at):
    good = [[i * 60_000, 100 + i, 102 + i, 99 + i, 101 + i, 5] for i in range(12)]
    rows = [list(r) for r in good]
    for r, k in zip(bad, at):
        rows.insert(k + 1, r)  # never before the first row: a non-numeric first row is a header
    path = tmp_path / "BTCUSDT-1m.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with open(path, newline="") as f:
        written = list(csv.reader(f))  # as the file holds them (a float written, then read back as text)
    verdict, expected = oracle(written)
    try:
        got = candle_files.read_file(path)
    except candle_files.CandleFileError as e:
        assert verdict == "error" and f":{expected}:" in str(e), (str(e), verdict, expected)
        return
    assert verdict == "ok", (expected, written)
    assert got.tolist() == [[float(x) for x in r] for r in expected]


def test_a_byte_order_mark_keeps_the_first_candle_and_a_freqtrade_folder_reads_its_candles_only(tmp_path):
    rows = "".join(f"{i * 60_000},100,101,99,100,5\n" for i in range(3))
    (tmp_path / "BTCUSDT-1m.csv").write_bytes(b"\xef\xbb\xbf" + rows.encode())
    assert candle_files.read_file(tmp_path / "BTCUSDT-1m.csv")[0, 0] == 0  # not taken for a header
    ft = tmp_path / "freqtrade"
    ft.mkdir()
    (ft / "BTC_USDT-1m.json").write_text(json.dumps([[i * 60_000, 100, 101, 99, 100, 5] for i in range(5)]))
    (ft / "BTC_USDT-trades.json").write_text(json.dumps([[0, "t1", None, "buy", 100.0, 1.0, 100.0]]))
    (ft / "BTC_USDT_USDT-8h-funding_rate.json").write_text(json.dumps([[0, 0.0001, 0, 0, 0, 0]]))
    (ft / "BTC_USDT_USDT-1m-mark.json").write_text(json.dumps([[0, 1, 1, 1, 1, 0]]))
    assert {s: len(c) for s, c in candle_files.load(ft).items()} == {"BTC/USDT": 5}
