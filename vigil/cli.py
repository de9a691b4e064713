"""Parses the command line and runs the chosen command (run, check, report, backtest, download, replay, backup)
with its exit code: 0 done, 1 failed, 2 bad input."""
import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import tempfile
import time
import traceback

from vigil import __version__, config, flight, process, report
from vigil.process import Notifier
from vigil.schemas import TS
from vigil.storage import MIGRATIONS, Storage, inspect

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
    p.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), help="overrides [vigil] log_level")
    p.add_argument("--version", action="version", version=f"vigil {__version__} (code {flight.code_version()})")
    sub = p.add_subparsers(dest="command")
    sub.add_parser("check", help="validate the config and reach the configured sources")
    r = sub.add_parser("report", help="per-strategy performance from the database")
    r.add_argument("--json", action="store_true", help="machine-readable output")
    bt = sub.add_parser("backtest", help="run the pipeline over stored candles")
    source = bt.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", nargs="+", action="extend", help="candle files or folders: one per venue, "
                        "a folder named EXCHANGE-MARKET (binance-swap) for that venue, any other for the trade venue")
    source.add_argument("--recorded", help="another Vigil database: replay its recorded session")
    bt.add_argument("--symbols", nargs="*", help="only these symbols (BTC/USDT ...)")
    bt.add_argument("--from", dest="start", help="first day, YYYY-MM-DD (UTC)")
    bt.add_argument("--to", dest="end", help="day after the last, YYYY-MM-DD (UTC)")
    bt.add_argument("--funding", nargs="*", default=[], help="VENUE:FILE funding-rate history (a download folder's "
                                                             "own is read without it)")
    bt.add_argument("--db", help="keep the backtest's database here: a new file, or an earlier backtest's database, "
                                 "which is replaced (default: a temporary one)")
    bt.add_argument("--equity-csv", help="write the equity curve and exposure per cycle to this CSV file")
    bt.add_argument("--plot", help="a PNG of the equity curve over its drawdown (as /chart draws it)")
    bt.add_argument("--breakdown", choices=("day", "week", "month"), help="realized PnL per period, per strategy")
    bt.add_argument("--trades", help="write every position (strategy, times, prices, fees, PnL, exit reason) to CSV")
    bt.add_argument("--json", action="store_true", help="machine-readable output")
    sw = sub.add_parser("sweep", help="backtest a grid of settings: ranked on a train period, judged on the next")
    sw.add_argument("--data", required=True, nargs="+", action="extend",
                    help="candle files or folders, as for backtest")
    sw.add_argument("--set", action="append", required=True, metavar="SECTION.KEY=V1,V2",
                    help="values to try, e.g. momentum.range_bars=20,30,40 (repeat for more keys: every combination)")
    sw.add_argument("--symbols", nargs="*", help="only these symbols (BTC/USDT ...)")
    sw.add_argument("--from", dest="start", help="first day, YYYY-MM-DD (UTC)")
    sw.add_argument("--to", dest="end", help="day after the last, YYYY-MM-DD (UTC)")
    sw.add_argument("--funding", nargs="*", default=[], help="VENUE:FILE funding-rate history, as for backtest")
    sw.add_argument("--split", help="first day of the test period, YYYY-MM-DD (default: 70%% of the span is train)")
    sw.add_argument("--metric", default="net_pnl", choices=("net_pnl", "sharpe", "sortino", "profit_factor",
                                                             "win_rate", "expectancy", "max_drawdown"))
    sw.add_argument("--jobs", type=int, help="processes at once (default: one per core)")
    sw.add_argument("--json", action="store_true", help="machine-readable output")
    dl = sub.add_parser("download", help="fetch candle history with ccxt into files backtest reads")
    dl.add_argument("--exchange", default="binance", help="binance, bybit or okx (spot: any ccxt exchange id)")
    dl.add_argument("--market", default="swap", choices=("swap", "spot"),
                    help="swap (default): USDT-margined perpetual candles, funding and mark-price candles; "
                         "spot: candles")
    dl.add_argument("--symbols", nargs="+", required=True, help="BTC/USDT ...")
    dl.add_argument("--from", dest="start", required=True, help="first day, YYYY-MM-DD (UTC)")
    dl.add_argument("--to", dest="end", help="day after the last, YYYY-MM-DD (UTC; default: now)")
    dl.add_argument("--timeframe", default="1m", choices=sorted(config.TIMEFRAME_MS))
    dl.add_argument("--out", default="data", help="the files go to OUT/EXCHANGE-MARKET, e.g. data/binance-swap")
    dl.add_argument("--url", help="the REST API's scheme and host, e.g. a proxy or mirror (every path is kept)")
    rp = sub.add_parser("replay", help="re-run a recorded cycle's decisions and compare")
    rp.add_argument("--cycle", type=int, required=True, help="cycle number (see report or /why)")
    b = sub.add_parser("backup", help="online consistent copy of the database")
    b.add_argument("path", help="where to write the copy")
    return p


def main(argv=None):
    try:
        args = parser().parse_args(argv)
        if args.cycles is not None and args.cycles < 1:
            raise UsageError("--cycles: must be >= 1")
        if args.interval is not None and not 0 <= args.interval < float("inf"):
            raise UsageError("--interval: must be a number of seconds >= 0")
        cfg = config.load(args.config)
        if args.command is None:
            _two_keys(cfg, args)
    except (UsageError, config.ConfigError) as e:
        print(f"vigil: {e}", file=sys.stderr)
        return 2
    process.setup(cfg, args.log_level)
    try:
        return _command(cfg, args)
    except (UsageError, config.ConfigError) as e:
        print(f"vigil: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader left early (`report | head`): run.py ends quietly
        raise
    except Exception as e:  # a bug or an unforeseen answer: one line here, the traceback in a file
        where = cfg["vigil"]["log_file"] or os.path.join(tempfile.gettempdir(), "vigil-traceback.txt")
        with open(where, "a", encoding="utf-8") as f:
            f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {args.command or 'run'} failed:\n{traceback.format_exc()}")
        print(f"vigil: {type(e).__name__}: {str(e)[:300]} (traceback in {where})", file=sys.stderr)
        return 1


def _command(cfg, args):
    if args.command in ("report", "replay", "backup") or args.command is None:
        _database(cfg["vigil"]["db"], must_exist=args.command is not None)
    if args.command == "check":
        return check(cfg)
    if args.command == "report":
        db = Storage(cfg["vigil"]["db"])
        out = report.build(db, cfg)
        print(json.dumps(out, indent=2) if args.json else report.text(out))
        return 0
    if args.command == "backtest":
        from vigil import backtest, candle_files
        recorded = None
        try:
            if args.recorded:
                from vigil.flight import RecordedSource
                if not os.path.exists(args.recorded):
                    raise OSError(f"--recorded: no database at {args.recorded}")
                data, rates, recorded = {}, {}, RecordedSource(args.recorded)
            else:
                data, rates = backtest.load(cfg, args.data, args.symbols, args.start, args.end, args.funding)
            if args.db and os.path.exists(args.db):
                if _database(args.db, must_exist=True) != "backtest":
                    raise ValueError(f"--db {args.db}: not a backtest's database (it may hold a sim, paper or live "
                                     "session): name a new file")
                for suffix in ("", "-wal", "-shm"):  # an earlier backtest's: replaced, never added to
                    if os.path.exists(args.db + suffix):
                        os.remove(args.db + suffix)
        except (candle_files.CandleFileError, OSError, ValueError) as e:
            print(f"vigil: {e}", file=sys.stderr)
            return 2
        out = backtest.run(cfg, data, rates, args.db, args.equity_csv, recorded=recorded, plot=args.plot,
                           breakdown=args.breakdown, trades_csv=args.trades)
        print(json.dumps(out, indent=2) if args.json else backtest.text(out))
        return 0
    if args.command == "sweep":
        from vigil import backtest, candle_files
        try:
            points = backtest.grid(cfg, args.set)
            data, rates = backtest.load(cfg, args.data, args.symbols, args.start, args.end, args.funding)
            first = min(int(c[0, TS]) for _, _, c in backtest.series(data))
            last = max(int(c[-1, TS]) for _, _, c in backtest.series(data))
            split = candle_files.day_ms(args.split) if args.split else first + (last - first) * 7 // 10
            if not first < split <= last:
                raise ValueError(f"--split {args.split}: not inside the data ({candle_files.day(first)} to "
                                 f"{candle_files.day(last)})")
            for v, s, c in backtest.series(data):
                for name, n in (("train", int((c[:, TS] < split).sum())), ("test", int((c[:, TS] >= split).sum()))):
                    if n <= cfg["market"]["history"]:
                        raise ValueError(f"--split: the {name} period holds {n} candles of {s} on {v}, not more than "
                                         f"the {cfg['market']['history']} of [market] history its warm-up takes")
        except (candle_files.CandleFileError, OSError, ValueError) as e:
            print(f"vigil: {e}", file=sys.stderr)
            return 2
        progress = sys.stderr if sys.stderr.isatty() else None
        rows = backtest.sweep(cfg, data, rates, points, split, args.metric, args.jobs, progress)
        print(json.dumps({"metric": args.metric, "split": split, "points": len(rows), "rows": rows}, indent=2)
              if args.json else backtest.sweep_text(rows, args.metric, split))
        return 0
    if args.command == "download":
        import ccxt
        from vigil import candle_files
        try:
            since, until = candle_files.day_ms(args.start), candle_files.day_ms(args.end) if args.end else 2**62
            ex = candle_files.client(args.exchange, args.market, args.url)
        except ValueError as e:
            raise UsageError(f"download: {e}") from None
        out = os.path.join(args.out, candle_files.folder(args.exchange, args.market))
        missing = []
        try:
            os.makedirs(out, exist_ok=True)
            for symbol in args.symbols:
                try:
                    candle_files.download(ex, symbol, args.timeframe, since, until, out)
                except candle_files.CandleFileError as e:  # the other symbols still come
                    print(f"vigil: download: {e}", file=sys.stderr)
                    missing.append(symbol)
        except (ccxt.BaseError, ValueError) as e:
            print(f"vigil: download: {type(e).__name__}: {e}", file=sys.stderr)
            return 1
        return 1 if missing else 0
    if args.command == "replay":
        identical, lines = flight.replay(Storage(cfg["vigil"]["db"]), cfg, args.cycle)
        print("\n".join(lines))
        return 0 if identical else 1
    if args.command == "backup":
        Storage(cfg["vigil"]["db"]).backup(args.path)
        print(f"backup written to {args.path} (integrity ok)")
        return 0
    try:
        held = process.lock(cfg["vigil"]["db"])
    except process.AlreadyRunning as e:
        print(f"vigil: {e}", file=sys.stderr)
        return 1
    try:
        return asyncio.run(run(cfg, args.cycles, args.interval, args.config))
    finally:
        held.close()


def _database(path, must_exist):
    """A database file the command can use: present when it must be, sqlite, of a schema this code knows.
    Returns its kind (see storage.inspect), None for a file still to be created."""
    if not path:
        raise UsageError("[vigil] db: empty: name the database file")
    if not os.path.exists(path):
        if must_exist:
            raise UsageError(f"[vigil] db: no database at {path} (run Vigil first, or point db at one)")
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise UsageError(f"[vigil] db: cannot create {path}: its folder is missing or not writable")
        return None
    try:
        version, kind = inspect(path)
    except ValueError as e:
        raise UsageError(f"[vigil] db: {e}") from None
    if version > len(MIGRATIONS):
        raise UsageError(f"[vigil] db: {path} comes from a newer Vigil (schema {version}); upgrade the code")
    return kind


def _two_keys(cfg, args):
    mode = cfg["vigil"]["mode"]
    if mode == "live" and not args.live:
        raise UsageError("[vigil] mode: live needs --live on the command line as the second key")
    if args.live and mode != "live":
        raise UsageError(f"--live: [vigil] mode is {mode}, not live; refusing to guess")


def check(cfg):
    """Config first; in paper mode every configured source is reached and timed. 0 all answered, 1 not."""
    print(f"config ok: mode {cfg['vigil']['mode']}, {len(cfg['market']['symbols'])} symbols, "
          f"strategies {', '.join(cfg['strategies']['enabled'])}")
    if cfg["vigil"]["mode"] == "sim":
        return 0
    from vigil.paper_source import probe
    rows = asyncio.run(probe(cfg))
    if cfg["vigil"]["mode"] == "live":
        rows += asyncio.run(_live_check(cfg))
    width = max(len(name) for name, _, _ in rows)
    failed = 0
    for name, ms, error in rows:
        status = "ok" if error is None else "skip" if error.startswith("skipped") else "FAILED"
        failed += status == "FAILED"
        print(f"{name:<{width}}  {status:<6} {ms:8.0f} ms  {error or ''}")
    return 1 if failed else 0


def build(cfg, clock=time.time):
    """Wires source, broker, database and orchestrator for the configured mode, on one clock (seconds): the
    heartbeat, the streams' candle closes and every stamp read it."""
    from vigil.orchestrator import Orchestrator
    from vigil.flight import Recorder
    from vigil.sim import SimBroker
    from vigil.sim import SimMarket
    db = Storage(cfg["vigil"]["db"], durable=cfg["vigil"]["mode"] == "live")
    if cfg["vigil"]["mode"] == "sim":
        source = SimMarket(cfg)
    else:
        from vigil.paper_source import PaperSource
        source = PaperSource(cfg, clock)
    broker = live_broker(cfg) if cfg["vigil"]["mode"] == "live" else SimBroker(source, cfg["fills"])
    orch = Orchestrator(cfg, db, source, broker, console=_console, clock=clock)
    orch.on_inputs.append(Recorder(db, cfg).record)
    if cfg["vigil"]["mode"] == "live":
        from vigil.live_broker import reconcile
        orch.reconciler = lambda: reconcile(broker.clients, db, cfg["market"]["symbols"],
                                            cfg["live"]["balance_tolerance"])
    return orch


def live_broker(cfg):
    """Real orders go to the perpetual venues that trade (spot data venues never get orders)."""
    from vigil import venues
    from vigil.live_broker import LiveBroker
    return LiveBroker({v: venues.client(cfg, v, cfg["feeds"]["timeout"], keys=True)
                       for v in cfg["market"]["venues"] if v in ("binance", "bybit")})


def _console(line):
    """The cycle line: stdout for the operator, and the log file (not the console log) for later."""
    print(line, flush=True)
    logging.getLogger(process.CYCLE).info(line)


async def run(cfg, cycles, interval, config_path=None):
    orch = build(cfg)
    orch.config_path = config_path
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, orch.stop)
    log.info("vigil starting: mode %s, db %s", cfg["vigil"]["mode"], cfg["vigil"]["db"])
    orch.checkpoints = True
    orch.restore(replays_exactly=cfg["vigil"]["mode"] == "sim")
    if cfg["vigil"]["mode"] == "sim":
        # The sim keeps no state of its own: replaying its seed to the last cycle continues the same market.
        for _ in range(orch.cycle_n):
            await orch.source.tick()
    notifier = Notifier()
    orch.on_cycle.append(notifier.cycle)
    orch.control.alert("startup", f"vigil started: mode {cfg['vigil']['mode']}"
                          f"{', HALTED: ' + orch.control.halt['reason'] if orch.control.halt else ''}")
    bot = await _start_bot(cfg, orch)
    notifier.ready()
    try:
        await orch.run(cycles=cycles, interval=interval)
    finally:
        notifier.stopping()
        orch.control.alert("shutdown", f"vigil stopped after cycle {orch.cycle_n}")
        log.info("vigil stopped after cycle %d", orch.cycle_n)
        if bot:
            await bot.stop()
        if hasattr(orch.executor.broker, "close"):
            await orch.executor.broker.close()
        orch.db.close()
    return 0


async def _start_bot(cfg, orch):
    """The bot is optional: without it (or with Telegram down) trading and risk go on."""
    t = cfg["telegram"]
    if not t["enabled"]:
        return None
    if not os.environ.get(t["token_env"]):
        log.error("[telegram] enabled but $%s is empty: no bot", t["token_env"])
        return None
    from vigil.bot import Bot
    bot = Bot(cfg, orch)
    await bot.start()
    return bot


async def _live_check(cfg):
    """Keys, permissions and clock, then exactly the calls reconciliation makes: ok here means it works."""
    import ccxt
    from vigil.live_broker import venue_state
    broker = live_broker(cfg)
    rows = []
    try:
        for venue, problem, details in await broker.check():
            rows.append((f"{venue} account" + (f" ({details})" if details else ""), 0.0, problem))
            if problem and problem.startswith("no API key"):
                continue
            try:
                state = await venue_state(venue, broker.clients[venue], cfg["market"]["symbols"][0])
                problem = "hedge mode (dual side) is on: switch the account to one-way mode" if state["hedge"] else None
                rows.append((f"{venue} reconciliation ({len(state['positions'])} positions, "
                             f"{len(state['resting'])} open orders)", 0.0, problem))
            except (ccxt.BaseError, LookupError, ValueError, TypeError) as e:
                rows.append((f"{venue} reconciliation", 0.0, f"{type(e).__name__}: {str(e)[:150]}"))
        return rows
    finally:
        await broker.close()
