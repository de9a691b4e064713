"""Parses the command line and dispatches to run, check and report, with the exit codes of DESIGN.md."""
import argparse
import asyncio
import json
import logging
import signal
import sys

from vigil import config, report
from vigil.storage import Storage

log = logging.getLogger("vigil")


class UsageError(Exception):
    """Bad arguments: one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


def parser():
    p = _Parser(prog="run.py", description="Vigil: crypto trading automation, one process, one loop.")
    p.add_argument("--config", default="vigil.cfg", help="config file (default ./vigil.cfg)")
    p.add_argument("--cycles", type=int, help="stop after N cycles")
    p.add_argument("--interval", type=float, help="seconds between cycles (overrides the config)")
    p.add_argument("--live", action="store_true", help="second key for live trading (with mode = live)")
    sub = p.add_subparsers(dest="command")
    sub.add_parser("check", help="validate the config and reach the configured sources")
    r = sub.add_parser("report", help="per-strategy performance from the database")
    r.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def main(argv=None):
    try:
        args = parser().parse_args(argv)
        if args.cycles is not None and args.cycles < 1:
            raise UsageError("--cycles: must be >= 1")
        if args.interval is not None and args.interval < 0:
            raise UsageError("--interval: must be >= 0")
        cfg = config.load(args.config)
        if args.command is None:
            _two_keys(cfg, args)
    except (UsageError, config.ConfigError) as e:
        print(f"vigil: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=cfg["vigil"]["log_level"], stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "check":
        return check(cfg)
    if args.command == "report":
        db = Storage(cfg["vigil"]["db"])
        out = report.build(db, cfg)
        print(json.dumps(out, indent=2) if args.json else report.text(out))
        return 0
    return asyncio.run(run(cfg, args.cycles, args.interval))


def _two_keys(cfg, args):
    mode = cfg["vigil"]["mode"]
    if mode == "live" and not args.live:
        raise UsageError("[vigil] mode: live needs --live on the command line as the second key")
    if args.live and mode != "live":
        raise UsageError(f"--live: [vigil] mode is {mode}, not live; refusing to guess")


def check(cfg):
    print(f"config ok: mode {cfg['vigil']['mode']}, {len(cfg['market']['symbols'])} symbols, "
          f"strategies {', '.join(cfg['strategies']['enabled'])}")
    return 0


def build(cfg):
    """Wires source, broker, database and orchestrator for the configured mode."""
    from vigil.orchestrator import Orchestrator
    from vigil.sim_broker import SimBroker
    from vigil.simmarket import SimMarket
    db = Storage(cfg["vigil"]["db"], durable=cfg["vigil"]["mode"] == "live")
    source = SimMarket(cfg)
    broker = SimBroker(source, cfg["fills"])
    return Orchestrator(cfg, db, source, broker)


async def run(cfg, cycles, interval):
    orch = build(cfg)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, orch.stop)
    log.info("vigil starting: mode %s, db %s", cfg["vigil"]["mode"], cfg["vigil"]["db"])
    if cfg["vigil"]["mode"] == "sim":
        # The sim keeps no state of its own: replaying its seed to the last cycle continues the same market.
        for _ in range(orch.cycle_n):
            await orch.source.tick()
    await orch.run(cycles=cycles, interval=interval)
    log.info("vigil stopped after cycle %d", orch.cycle_n)
    orch.db.close()
    return 0
