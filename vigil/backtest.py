"""Runs the live orchestrator over stored candles with a virtual clock, served bar by bar with no look-ahead (once,
or over a grid of settings judged on a train and a test period), and reports what it did."""
import array
import asyncio
import bisect
import concurrent.futures
import csv
import itertools
import os
import sys
import tempfile
import time

import numpy as np

from vigil import candle_files, config, report, schemas
from vigil.config import TIMEFRAME_MS
from vigil.market_state import FileTrend
from vigil.orchestrator import Orchestrator
from vigil.schemas import TS
from vigil.sim import SimBroker
from vigil.storage import Storage
from vigil.venues import CLIENTS

QUIET_SLICE = 8192  # bars per slice of the strategies' quiet(): a few MB of temporaries
ABSENT = schemas.feed(error="no history in this backtest")  # copied: each cycle gets feed dicts of its own


def load(cfg, paths, symbols=None, start=None, end=None, funding=()):
    """Candles per venue and symbol cut to [start, end), and funding per symbol and venue; the run's symbols are
    the data's.

    paths: candle files or folders (one path alone works too). A folder named EXCHANGE-MARKET, as download writes
    them, holds that venue's candles (binance-swap: binance, binance-spot: binance_spot) and, in the
    BASEQUOTE-funding files beside them, its funding history; a folder of any other name holds the trade venue's.
    funding: VENUE:FILE items, funding history of venues that have no such folder.
    """
    market = cfg["market"]
    data, rates, held = {}, {}, {}
    for path in [paths] if isinstance(paths, (str, os.PathLike)) else paths:
        venue = candle_files.venue_of(path) or market["trade_venue"]
        if venue in held:
            raise ValueError(f"{path}: holds {venue} candles as {held[venue]} does: one folder per venue, each named "
                             "EXCHANGE-MARKET as download names them (binance-swap, bybit-swap ...)")
        if venue not in CLIENTS:
            raise ValueError(f"{path}: its name says venue {venue}, which Vigil does not know ({', '.join(CLIENTS)}): "
                             "rename the folder (a folder of another name holds the trade venue's candles)")
        if venue not in market["venues"]:
            raise ValueError(f"{path}: holds {venue} candles, and {venue} is not among [market] venues "
                             f"({', '.join(market['venues'])}): add it there, or leave this folder out")
        held[venue] = path
        data[venue] = _cut(cfg, path, candle_files.load(path, symbols), start, end)
        for f in candle_files.funding_files(path, data[venue]):
            rates.setdefault(candle_files.symbol_of(f), {})[venue] = candle_files.read_funding(f)
    if market["trade_venue"] not in data:
        raise ValueError(f"[market] trade_venue: {market['trade_venue']} has no candles in --data (it holds "
                         f"{', '.join(sorted(data))}): set trade_venue to one of them, or add its folder")
    for item in funding:
        venue, _, path = item.partition(":")
        if venue in rates.get(candle_files.symbol_of(path), {}):
            raise ValueError(f"--funding {item}: {venue} {candle_files.symbol_of(path)} funding is already in "
                             f"{held[venue]}: give it once")
        rates.setdefault(candle_files.symbol_of(path), {})[venue] = candle_files.read_funding(path)
    return data, rates


def _cut(cfg, data_path, data, start, end):
    """One venue's {symbol: candles} cut to [start, end), each of the configured timeframe and longer than the
    warm-up."""
    lo = candle_files.day_ms(start) if start else None
    hi = candle_files.day_ms(end) if end else None
    timeframe, history = cfg["market"]["timeframe"], cfg["market"]["history"]
    for s, c in data.items():
        found = candle_files.timeframe_of(c)
        if found != timeframe:
            fix = f"set [market] timeframe = {found}" if found else "its most common step is no timeframe Vigil knows"
            raise ValueError(f"{data_path}: {s} holds {found or 'irregular'} candles, not {timeframe}: {fix}")
        keep = (c[:, TS] >= (lo or c[0, TS])) & (c[:, TS] < (hi or c[-1, TS] + 1))
        if keep.sum() <= history:
            span = f"{candle_files.day(c[0, TS])} to {candle_files.day(c[-1, TS])}"
            raise ValueError(f"{data_path}: {s} has {int(keep.sum())} candles in the range asked (the data covers "
                             f"{span}), not more than the {history} of [market] history the warm-up takes")
        data[s] = c if keep.all() else c[keep]  # no copy of a year when all of it is asked
    return data


def series(data):
    """(venue, symbol, candles) of {venue: {symbol: candles}}, one by one."""
    return [(v, s, c) for v, by_symbol in data.items() for s, c in by_symbol.items()]


def run(cfg, data, rates, db_path=None, equity_csv=None, progress=sys.stderr, recorded=None, plot=None,
        breakdown=None, trades_csv=None):
    """Returns the report dict; the equity curve and exposure go to equity_csv, its picture to plot (a PNG),
    every position to trades_csv; breakdown ('day', 'week' or 'month') adds realized PnL per such period.

    data: {venue: {symbol: candles}}; recorded: a RecordedSource replaying another database's flight record instead.
    """
    symbols = sorted({s for _, s, _ in series(data)}) if recorded is None else cfg["market"]["symbols"]
    cfg = dict(cfg, vigil=dict(cfg["vigil"], console=False, db=db_path), market=dict(cfg["market"], symbols=symbols))
    bar_ms = TIMEFRAME_MS[cfg["market"]["timeframe"]]
    found_gaps = {v: {s: candle_files.gaps(c, bar_ms) for s, c in by_symbol.items()} for v, by_symbol in data.items()}
    tmp = None
    if db_path is None:
        tmp = tempfile.TemporaryDirectory()
        db_path = cfg["vigil"]["db"] = os.path.join(tmp.name, "backtest.db")
    db = Storage(db_path, scratch=True)
    db.put("kind", "backtest")  # what `backtest --db` may replace, and nothing else
    source = recorded or BacktestSource(cfg, data, rates)
    orch = Orchestrator(cfg, db, source, SimBroker(source, cfg["fills"]), console=lambda line: None)
    total, started = source.count(), time.time()
    if recorded is None:
        venue = cfg["market"]["trade_venue"]
        orch.trend = FileTrend(venue, cfg["market_state"], data.get(venue, {}))
        orch.rows_from = source.last_close() - cfg["vigil"]["retention_days"] * 86_400_000  # the retention drops them
    exposure = {"sum": 0.0, "max": 0.0, "in": 0}  # of gross exposure / equity; "in": cycles with any
    curve = open(equity_csv, "w") if equity_csv else None
    points = array.array("d")  # the equity of every cycle, for the picture only
    if curve:
        curve.write("time_ms,equity,gross_exposure\n")

    def sample(rec):
        """Streams the equity curve to its file and keeps only running exposure figures in memory."""
        equity, gross = rec["equity"], 0.0
        for p in orch.book.positions.values():
            for leg in p["legs"]:
                gross += leg["qty"] * leg["mark"]
        if curve:  # six decimals: a full float repr (csv.writer's) costs about 1 us a cycle
            curve.write(f"{rec['started_at']},{equity:.6f},{gross:.6f}\n")
        if plot:
            points.append(equity)
        if gross > 0 and equity > 0:
            share = gross / equity
            exposure["sum"] += share
            exposure["max"] = max(exposure["max"], share)
            exposure["in"] += 1
        if rec["n"] % 2000 == 0 or rec["n"] == last_n:
            progressed(rec["n"])

    def flat(closes):
        """The bars skipped while flat: the equity the last cycle left, no exposure."""
        equity = orch.book.equity()
        if curve:
            curve.write("".join(f"{t},{equity:.6f},0.000000\n" for t in closes.tolist()))
        if plot:
            points.extend([equity] * len(closes))
        if (orch.cycle_n - len(closes)) // 2000 != orch.cycle_n // 2000:
            progressed(orch.cycle_n)

    def progressed(n):
        flush()
        if not progress:
            return
        done = (n - first_n) / max(total, 1)
        rate = (n - first_n) / max(time.time() - started, 1e-9)
        line = f"backtest [{'#' * int(done * 30):<30}] {done:6.1%} {n - first_n:,}/{total:,} candles {rate:,.0f}/s"
        if terminal:  # one line redrawn in place
            progress.write("\r" + line)
        elif int(done * 10) > int((n - first_n - 2000) / max(total, 1) * 10) or n == last_n:
            progress.write(line + "\n")  # a log (cron, CI): a plain line every tenth, no carriage returns
        progress.flush()

    async def drive():
        """Every bar a cycle, but a bar every strategy is quiet on passes without decisions when orch.can_pass():
        while flat, a run of such bars is served at once with no cycle (they keep their cycle numbers, so ids are
        those of a run of every bar); else a cycle follows and marks the positions. The last bar is always decided.
        The market state's figures come from the files (FileTrend), so no bar passed is missing from them."""
        by_name = source.quiet_bars(orch.strategies, cfg) if recorded is None else {}
        quiet = np.logical_and.reduce(list(by_name.values())) if by_name else None
        orch.on_inputs.append(lambda inputs: inputs.update(quiet=[n for n, q in by_name.items() if q[source.i]]))
        await source.start()
        try:
            while orch.cycle_n < last_n:
                left = last_n - orch.cycle_n - 1
                if quiet is not None and left > 0 and quiet[source.i + 1] and orch.can_pass():
                    if orch.flat():
                        closes = source.skip(quiet, left)
                        orch.cycle_n += len(closes)
                        flat(closes)
                    else:
                        await orch.cycle(decisions=False)
                    continue
                await orch.cycle()
                decided[0] += 1
        finally:
            await source.close()

    terminal = bool(progress) and progress.isatty()
    first_n = orch.cycle_n
    last_n, decided = first_n + total, [0]
    orch.on_cycle.append(sample)
    with db.batch() as flush:  # commits every 2,000 cycles, not every cycle
        asyncio.run(drive())
    if curve:
        curve.close()
    if terminal:
        progress.write("\n")
    out = report.build(db, cfg)
    out["mode"] = "backtest"
    closed = db.closed_positions()
    out["backtest"] = {
        "candles": {v: {s: len(c) for s, c in by_symbol.items()} for v, by_symbol in data.items()}, "cycles": total,
        "decided": decided[0],
        "timeframe": cfg["market"]["timeframe"], "venue": cfg["market"]["trade_venue"],
        "from": min((int(c[0, TS]) for _, _, c in series(data)), default=None),
        "to": max((int(c[-1, TS]) for _, _, c in series(data)), default=None),
        "gaps": {v: {s: [{"from": ts, "bars": n} for ts, n in g] for s, g in by_symbol.items()}
                 for v, by_symbol in found_gaps.items()},
        "fees_paid": sum(p["fees"] for p in closed), "funding": sum(p["funding"] for p in closed),
        "exposure": {"mean": exposure["sum"] / max(total, 1), "max": exposure["max"],
                     "time_in_market": exposure["in"] / max(total, 1)},
        "seconds": round(time.time() - started, 3),
        "funding_history": {s: sorted(by_venue) for s, by_venue in sorted(rates.items())},
    }
    if equity_csv:
        out["backtest"]["equity_csv"] = equity_csv
    if plot:
        with open(plot, "wb") as f:
            f.write(report.chart(points))
        out["backtest"]["plot"] = plot
    if breakdown:
        out["backtest"]["breakdown"] = _breakdown(closed, breakdown)
    if trades_csv:
        _trades(db, trades_csv)
        out["backtest"]["trades_csv"] = trades_csv
    db.close()
    if tmp:
        tmp.cleanup()
    return out


def text(out):
    b = out["backtest"]
    held = "; ".join(f"{', '.join(by_symbol)} on {v}" for v, by_symbol in b["candles"].items())
    counts = "; ".join(f"{v} " + ", ".join(f"{s} {n:,}" for s, n in by_symbol.items())
                       for v, by_symbol in b["candles"].items())
    span = (f"{candle_files.day(b['from'])} to {candle_files.day(b['to'])}, " if b["from"] is not None else "") + \
        f"{b['timeframe']} candles of {held or 'a recorded session on ' + b['venue']}"
    history = ", ".join(f"{s} on {', '.join(venues)}" for s, venues in b["funding_history"].items())
    lines = [span, report.text(out), "",
             f"backtest: {b['cycles']:,} cycles over {counts or 'a recorded session'} in {b['seconds']:.1f}s; "
             f"{b['decided']:,} decided; on the others no strategy could act (positions only followed and marked)",
             f"fees paid {b['fees_paid']:.2f}, funding {b['funding']:+.2f}; gross exposure mean "
             f"{b['exposure']['mean']:.1%} max {b['exposure']['max']:.1%}, in the market "
             f"{b['exposure']['time_in_market']:.1%} of the time",
             f"funding history: {history or 'none: funding strategies stay idle'}"]
    for v, by_symbol in b["gaps"].items():
        for s, g in by_symbol.items():
            if g:
                lines.append(f"gaps in {s} on {v}: {len(g)} ({sum(x['bars'] for x in g)} bars missing, not filled)")
    if b.get("equity_csv"):
        lines.append(f"equity curve: {b['equity_csv']}")
    if b.get("plot"):
        lines.append(f"equity and drawdown picture: {b['plot']}")
    if b.get("trades_csv"):
        lines.append(f"every position: {b['trades_csv']}")
    if b.get("breakdown"):
        names = sorted({s for row in b["breakdown"] for s in row["strategies"]})
        lines += ["", f"{'period':<20}" + "".join(f"{n:>16}" for n in names) + f"{'total':>16}{'trades':>8}"]
        for row in b["breakdown"]:
            cells = "".join(f"{row['strategies'].get(n, {}).get('pnl', 0.0):>+16.2f}" for n in names)
            lines.append(f"{row['period']:<20}{cells}{row['total']['pnl']:>+16.2f}{row['total']['trades']:>8}")
    return "\n".join(lines)


def _breakdown(closed, unit):
    """Realized PnL per period (oldest first) from the first closed position's period to the last's."""
    if not closed:
        return []
    first, last = min(p["closed_at"] for p in closed), max(p["closed_at"] for p in closed)
    rows = report.periods(closed, unit, (last - first) // report.DAY_MS + 1, last)[::-1]
    while rows and not rows[0][1]:  # days step back past the first trade's week or month: those are dropped
        rows.pop(0)
    return [{"period": label, "strategies": {s: {"pnl": pnl, "trades": n} for s, (pnl, n) in by.items()},
             "total": {"pnl": sum(v[0] for v in by.values()), "trades": sum(v[1] for v in by.values())}}
            for label, by in rows]


def _trades(db, path):
    """Every position as one CSV row: what opened it, where and when, at what prices, and how it ended."""
    fields = ["id", "strategy", "symbol", "side", "kind", "status", "opened_at", "closed_at", "entry", "exit",
              "qty", "fees", "funding", "pnl", "exit_reason"]
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(fields)
        for p in db.positions():
            leg = p["legs"][0]
            exits = [fill for o in db.orders(position_id=p["id"]) if o["reduce_only"] and o["leg"] == 0
                     for fill in db.fills(o["id"])]
            qty = sum(x["qty"] for x in exits)
            out.writerow([p["id"], p["strategy"], p["symbol"], p["side"], p["kind"], p["status"],
                          candle_files.day(p["opened_at"]), candle_files.day(p["closed_at"]) if p["closed_at"] else "", f"{leg['entry']:.12g}",
                          f"{sum(x['qty'] * x['price'] for x in exits) / qty:.12g}" if qty else "",
                          f"{leg['opened_qty']:.12g}", f"{p['fees']:.6f}", f"{p['funding']:.6f}",
                          f"{p['realized_pnl']:.6f}", p["close_reason"] or ""])


class BacktestSource:
    """Each venue's candles from files, its bars its own; funding from history files if given; other feeds absent."""

    def __init__(self, cfg, candles, funding=None):
        self.venue = cfg["market"]["trade_venue"]
        self.history = cfg["market"]["history"]
        self.bar_ms = TIMEFRAME_MS[cfg["market"]["timeframe"]]
        self.data = {(v, s): c for v, s, c in series(candles)}  # {(venue, symbol): ndarray (n, 6)}
        self.funding = funding or {}  # {symbol: {venue: [(ts, rate, interval_h)]}}
        # One timeline for all series: one that has no bar at a time keeps its last one (gaps stay gaps).
        self.timeline = np.unique(np.concatenate([c[:, TS] for c in self.data.values()]))
        self.i = min(self.history, len(self.timeline)) - 1  # the first history bars only warm up
        start = self.timeline[self.i] if len(self.timeline) else -1
        self.end = {key: int(np.searchsorted(c[:, TS], start, side="right")) for key, c in self.data.items()}
        self.now = int(start) + self.bar_ms  # close time of the latest bar served

    def count(self):
        return len(self.timeline) - 1 - self.i

    def last_close(self):
        return int(self.timeline[-1]) + self.bar_ms if len(self.timeline) else 0

    def quiet_bars(self, strategies, cfg):
        """{name: a bool per bar of the timeline}: the strategy is quiet (see schemas' StrategyContext notes) on the
        bar each series serves then; a strategy without quiet() is never."""
        served = {"funding"} if self.funding else set()  # the feeds besides candles: the others are absent
        out = {name: np.full(len(self.timeline), hasattr(module, "quiet")) for name, module in strategies.items()}
        for c in self.data.values():
            end = np.searchsorted(c[:, TS], self.timeline, side="right")  # the bars served at each time
            for name, module in strategies.items():
                if hasattr(module, "quiet"):
                    q = self._quiet(module, c, served, cfg[name])
                    out[name] &= np.where(end > 0, q[end - 1], True)  # no bar yet: nothing to act on
        return out

    def _quiet(self, module, c, served, params):
        """module.quiet over the series c, slice by slice, each with the window before it: a year of windows at once
        takes a hundred MB, which the process keeps once it has had them."""
        q = np.zeros(len(c), bool)
        for lo in range(0, len(c), QUIET_SLICE):
            start, hi = max(0, lo - self.history + 1), lo + QUIET_SLICE
            part = module.quiet(c[start:hi], self.history, served, params)
            q[lo:hi] = part if np.ndim(part) == 0 else part[lo - start:]
        return q

    def skip(self, quiet, limit):
        """Serves the quiet bars next in the timeline (the next one is), at most limit, as if cycles had ticked through
        them; returns their close times."""
        ahead = quiet[self.i + 1:self.i + 1 + limit]
        k = len(ahead) if ahead.all() else int(ahead.argmin())
        closes = self.timeline[self.i + 1:self.i + 1 + k].astype(np.int64) + self.bar_ms
        self.i += k
        t = self.timeline[self.i]
        for key, c in self.data.items():
            self.end[key] = int(np.searchsorted(c[:, TS], t, side="right"))
        self.now = int(t) + self.bar_ms
        return closes

    async def start(self):
        pass

    async def close(self):
        pass

    async def tick(self):
        self.i += 1
        t = self.timeline[self.i]
        for key, c in self.data.items():
            e = self.end[key]
            if e < len(c) and c[e, TS] <= t:  # the timeline holds every bar, so a series moves one bar at most
                self.end[key] = e + 1
        self.now = int(t) + self.bar_ms
        return self.now

    def candles(self):
        end, history, data = self.end, self.history, {}
        for (v, s), c in self.data.items():
            data.setdefault(v, {})[s] = c[max(0, end[v, s] - history):end[v, s]]
        return schemas.feed(data, self.now)

    def bar(self, venue, symbol):
        end = self.end.get((venue, symbol))
        return schemas.bar(self.data[venue, symbol][end - 1]) if end else None

    async def feeds(self, now):
        out = {name: dict(ABSENT) for name in schemas.FEEDS}
        if self.funding:
            out["funding"] = schemas.feed(self._funding(now), now)
        return out

    def _funding(self, now):
        """The last rate published at or before now per symbol and venue: never a later one. Its mark is the venue's
        own bar, or the trade venue's for a venue without candles (funding given as VENUE:FILE)."""
        out = {}
        for symbol, venues in self.funding.items():
            for venue, rows in venues.items():
                k = bisect.bisect_right(rows, (now, float("inf"), float("inf"))) - 1
                bar = self.bar(venue, symbol) or self.bar(self.venue, symbol)
                if k < 0 or bar is None:
                    continue
                ts, rate, hours = rows[k]
                step = int(hours * 3_600_000)
                out.setdefault(symbol, {})[venue] = {"rate": rate, "interval_h": hours,
                                                     "next_ts": ts + step, "mark": float(bar["close"])}
        return out


METRICS = ("net_pnl", "sharpe", "sortino", "profit_factor", "win_rate", "expectancy", "max_drawdown")


def grid(cfg, assignments):
    """[{(section, key): value}] of every combination of --set SECTION.KEY=V1,V2 ...; each value checked by the
    config table before anything runs (a ConfigError names the first bad one)."""
    axes = []
    for item in assignments:
        name, _, values = item.partition("=")
        section, _, key = name.partition(".")
        spec = config.table_of(cfg).get(section, {}).get(key)
        if spec is None or not values:
            raise config.ConfigError(f"--set {item}: expected SECTION.KEY=V1,V2,... with a key of the config")
        axes.append([((section, key), config.value(section, key, spec, v)) for v in values.split(",")])
    return [dict(point) for point in itertools.product(*axes)]


def sweep(cfg, data, rates, points, split, metric, jobs=None, progress=None):
    """Backtests every point on the candles before split (train) and from split on (test), across processes.

    Returns rows ranked by the metric on train (the lower the better for max_drawdown), each with both periods'
    figures: what was chosen on one period is judged on the next, never on itself.
    """
    train = {v: {s: c[c[:, TS] < split] for s, c in by_symbol.items()} for v, by_symbol in data.items()}
    test = {v: {s: c[c[:, TS] >= split] for s, c in by_symbol.items()} for v, by_symbol in data.items()}
    tasks = [(cfg, point, period, rates) for point in points for period in (train, test)]
    with concurrent.futures.ProcessPoolExecutor(jobs or os.cpu_count()) as pool:
        results = []
        for i, result in enumerate(pool.map(_point, tasks), 1):
            results.append(result)
            if progress:
                progress.write(f"\rsweep {i}/{len(tasks)} backtests")
                progress.flush()
    if progress:
        progress.write("\n")
    rows = [{"set": {f"{s}.{k}": v for (s, k), v in point.items()}, "train": results[2 * i],
             "test": results[2 * i + 1]} for i, point in enumerate(points)]
    worst = float("inf") if metric == "max_drawdown" else float("-inf")
    rows.sort(key=lambda r: r["train"][metric] if r["train"][metric] is not None else worst,
              reverse=metric != "max_drawdown")
    return rows


def _point(task):
    """One backtest of one point of the grid on one period: the total figures it reports."""
    cfg, point, data, rates = task
    cfg = {section: dict(values) for section, values in cfg.items()}
    for (section, key), value in point.items():
        cfg[section][key] = value
    out = run(cfg, data, rates, progress=None)
    total = out["total"] or {}
    return {"trades": total.get("trades", 0), **{m: total.get(m) for m in METRICS}}


def sweep_text(rows, metric, split):
    head = (f"{len(rows)} points tried; ranked by {metric} on the train period (before {candle_files.day(split)}), "
            "each beside its test period")
    lines = [head, f"{'#':>3} {'settings':<44}{'train ' + metric:>16}{'test ' + metric:>16}{'train n':>9}{'test n':>8}"]
    for i, r in enumerate(rows, 1):
        settings = ", ".join(f"{k}={v}" for k, v in r["set"].items())
        lines.append(f"{i:>3} {settings:<44}{_num(r['train'][metric]):>16}{_num(r['test'][metric]):>16}"
                     f"{r['train']['trades']:>9}{r['test']['trades']:>8}")
    return "\n".join(lines)


def _num(x):
    return "-" if x is None else f"{x:.4g}"
