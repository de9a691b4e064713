"""Sets up console and rotating-file logging with every configured secret redacted."""
import logging
import logging.handlers
import os
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CYCLE = "vigil.cycle"  # the per-cycle line: printed on stdout already, so only the file gets it


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
