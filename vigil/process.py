"""Looks after the process around the loop: one running Vigil per database, systemd's notifications and logging
with every configured secret redacted."""
import fcntl
import logging
import logging.handlers
import os
import socket
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CYCLE = "vigil.cycle"  # the per-cycle line: printed on stdout already, so only the file gets it


class AlreadyRunning(Exception):
    """Another process holds the database's lock."""


def lock(db_path):
    """Returns the open lock file (keep it referenced); raises AlreadyRunning naming the holder's pid."""
    path = f"{os.path.realpath(db_path)}.lock"  # the same database by another path (a symlink) is the same lock
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise AlreadyRunning(f"another Vigil (pid {holder}) is running on {db_path}; refusing to start") from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f


class Notifier:
    """A no-op without NOTIFY_SOCKET, so the same code runs under systemd, cron or a terminal."""

    def __init__(self, address=None):
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract socket namespace
        self.address = address

    def send(self, message):
        if not self.address:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            try:
                s.sendto(message.encode(), self.address)
            except OSError:
                return False  # systemd gone: nothing to tell, and trading must not stop for it
        return True

    def ready(self):
        self.send("READY=1")

    def cycle(self, rec):
        """Called after every recorded cycle: a loop that hangs stops these pings and systemd restarts it."""
        self.send(f"WATCHDOG=1\nSTATUS=cycle {rec['n']} equity {rec['equity']:.2f}"
                  f"{' HALTED' if rec['halted'] else ''}")

    def stopping(self):
        self.send("STOPPING=1")


class Redact(logging.Filter):
    """Replaces the value of every secret environment variable named in the config with ***."""

    def __init__(self, secrets):
        super().__init__()
        self.secrets = [s for s in secrets if len(s) >= 4]

    def filter(self, record):
        msg = record.getMessage()
        if any(s in msg for s in self.secrets):
            for s in self.secrets:
                msg = msg.replace(s, "***")
            record.msg, record.args = msg, None
        return True


def secret_values(cfg):
    """Values of the environment variables that config keys ending in _env name."""
    names = [v for section in cfg.values() for k, v in section.items() if k.endswith("_env") and v]
    return [os.environ[n] for n in names if os.environ.get(n)]


def setup(cfg, level=None):
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.setLevel(level or cfg["vigil"]["log_level"])
    redact = Redact(secret_values(cfg))
    handlers = [logging.StreamHandler(sys.stderr)]
    if cfg["vigil"]["log_file"]:
        handlers.append(logging.handlers.RotatingFileHandler(
            cfg["vigil"]["log_file"], maxBytes=cfg["vigil"]["log_max_bytes"],
            backupCount=cfg["vigil"]["log_backups"], encoding="utf-8"))
    handlers[0].addFilter(lambda record: record.name != CYCLE)
    for h in handlers:
        h.setFormatter(logging.Formatter(FORMAT))
        h.addFilter(redact)
        root.addHandler(h)
    return redact
