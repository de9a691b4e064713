"""Bad input from every surface, as `run.py` meets it: one line naming the problem, the documented exit code, no
traceback, and any database involved unchanged."""
import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

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
]


@pytest.mark.parametrize("name,setup,args,config,code,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(tmp_path, name, setup, args, config, code, message):
    db = setup(tmp_path) if setup else tmp_path / "v.db"
    before = digest(db)
    data = tmp_path / "BTCUSDT-1m.csv"
    data.write_text("".join(f"{i * 60_000},100,101,99,100,5\n" for i in range(400)))
    out = run(tmp_path, *[a.format(data=data, db=db) for a in args], config=config)
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
