import asyncio
import logging
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vigil import cli, config, process
from vigil.storage import Storage
from vigil.process import Notifier

ROOT = Path(__file__).resolve().parent.parent


def make(tmp_path, extra=""):
    path = tmp_path / "v.cfg"
    path.write_text(f"[vigil]\ndb = {tmp_path}/v.db\nconsole = false\n{extra}")
    return path


def test_watchdog_pings_each_healthy_cycle_and_stops_when_the_loop_hangs(tmp_path):
    sock_path = str(tmp_path / "notify")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(sock_path)
    server.settimeout(5)
    orch = cli.build(config.load(make(tmp_path)))
    orch.on_cycle.append(Notifier(sock_path).cycle)
    hang = asyncio.Event()
    tick = orch.source.tick

    async def hanging_tick():
        if orch.cycle_n == 3:
            await hang.wait()  # the loop hangs in its fourth cycle
        return await tick()
    orch.source.tick = hanging_tick

    async def go():
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(orch.run(cycles=10, interval=0), 2)
    asyncio.run(go())
    pings = [server.recv(1024).decode() for _ in range(3)]
    assert all(p.startswith("WATCHDOG=1\nSTATUS=cycle ") for p in pings)
    server.settimeout(0.2)
    with pytest.raises(socket.timeout):
        server.recv(1024)  # no ping after the hang
    server.close()


def test_watchdog_is_a_noop_without_systemd(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert Notifier().send("READY=1") is False


def test_second_instance_is_refused(tmp_path):
    path = tmp_path / "v.cfg"  # console on: the first cycle line tells the lock is held
    path.write_text(f"[vigil]\ndb = {tmp_path}/v.db\n")
    first = subprocess.Popen([sys.executable, "run.py", "--config", str(path), "--interval", "60"], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().startswith("#1 ")  # the first cycle ran: the lock is held
        second = subprocess.run([sys.executable, "run.py", "--config", str(path), "--cycles", "1"], cwd=ROOT,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert f"another Vigil (pid {first.pid}) is running" in second.stderr
        (tmp_path / "link").symlink_to(tmp_path)  # the same database by another path
        (tmp_path / "other.cfg").write_text(f"[vigil]\ndb = {tmp_path}/link/v.db\n")
        third = subprocess.run([sys.executable, "run.py", "--config", str(tmp_path / "other.cfg"), "--cycles", "1"],
                               cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert third.returncode == 1 and f"another Vigil (pid {first.pid}) is running" in third.stderr
    finally:
        first.terminate()
        first.wait(timeout=30)


def test_log_rotation_and_redaction(tmp_path, monkeypatch):
    monkeypatch.setenv("BINANCE_API_SECRET", "SECRETKEY123456")
    log_file = tmp_path / "vigil.log"
    cfg = config.load(make(tmp_path, f"log_file = {log_file}\nlog_max_bytes = 10000\nlog_backups = 2\n"))
    cfg["venue.test"] = {"secret_env": "BINANCE_API_SECRET"}
    process.setup(cfg)
    try:
        log = logging.getLogger("vigil.test")
        for i in range(400):
            log.warning("order %d signed with SECRETKEY123456", i)
    finally:
        for h in list(logging.getLogger().handlers):
            h.close()
            logging.getLogger().removeHandler(h)
    files = sorted(p.name for p in tmp_path.glob("vigil.log*"))
    assert files == ["vigil.log", "vigil.log.1", "vigil.log.2"]
    text = "".join(p.read_text() for p in tmp_path.glob("vigil.log*"))
    assert "SECRETKEY123456" not in text and "signed with ***" in text


def test_backup_is_consistent_while_the_loop_writes(tmp_path):
    orch = cli.build(config.load(make(tmp_path)))
    done = threading.Event()

    def loop():
        asyncio.run(orch.run(cycles=800, interval=0))
        done.set()
    t = threading.Thread(target=loop)
    t.start()
    copies = []
    reader = Storage(str(tmp_path / "v.db"))
    while not done.is_set() or len(copies) < 3:
        path = tmp_path / f"copy{len(copies)}.db"
        reader.backup(str(path))  # raises if the copy fails its integrity check
        copies.append(path)
    t.join()
    for path in copies:
        db = Storage(str(path))
        counts = db.counts()
        last = db.last_cycle()
        assert counts["cycles"] == last  # the copy is a whole transaction boundary, never half a cycle


def test_backup_command(tmp_path):
    path = make(tmp_path)
    subprocess.run([sys.executable, "run.py", "--config", str(path), "--cycles", "5", "--interval", "0"], cwd=ROOT,
                   check=True, capture_output=True, timeout=120)
    out = subprocess.run([sys.executable, "run.py", "--config", str(path), "backup", str(tmp_path / "b.db")],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "integrity ok" in out.stdout
    assert Storage(str(tmp_path / "b.db")).counts()["cycles"] == 5


def test_retention_bounds_the_decision_rows(tmp_path):
    # One-minute bars: with 1 day kept, 3000 cycles (about 2 days) keep at most 1440 + 500 cycle rows.
    orch = cli.build(config.load(make(tmp_path, "retention_days = 1\n")))
    orch.db.add_alert(int(time.time() * 1000) - 2 * 86_400_000, "test", "two days old")  # alerts: wall clock
    asyncio.run(orch.run(cycles=3000, interval=0))
    texts = orch.db.alerts()
    assert "two days old" not in texts and any(t.startswith("opened") for t in texts)
    counts = orch.db.counts()
    assert counts["cycles"] <= 1440 + 500
    assert counts["orders"] > 0 and len(orch.db.positions()) > 0  # orders and positions are never pruned
    first = orch.db.first_cycles()
    assert counts["flight"] <= 1440 + 500 and counts["flight_candles"] <= 12 * (1440 + 500 + 300)
    from vigil import flight
    assert flight.replay(orch.db, orch.cfg, first["cycles"])[0]  # the oldest cycle kept still replays
    assert first["cycles"] > 1 and first["proposals"] >= first["cycles"] and first["verdicts"] >= first["cycles"]
