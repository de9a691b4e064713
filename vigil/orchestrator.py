"""Runs the fixed-rate heartbeat and, in each cycle, its steps in order: market state, feeds, decisions, execute,
track, record."""
import asyncio
import gc
import importlib
import logging
import math
import time

from vigil import schemas, tracker
from vigil.config import TIMEFRAME_MS
from vigil.control import Control
from vigil.decide import decide
from vigil.executor import Executor, Halted
from vigil.market_state import Trend
from vigil.schemas import OPEN, TS, VOLUME

log = logging.getLogger("vigil.orchestrator")
PRUNE_EVERY = 500  # cycles between retention sweeps
YIELD_EVERY_S = 0.005  # back-to-back cycles (a backtest) give the event loop a turn this often


class Orchestrator:
    """Owns the cycle: every step's output is in the database before the next step reads it."""

    def __init__(self, cfg, db, source, broker, console=print, clock=time.time):
        self.cfg = cfg
        self.clock = clock  # seconds: the heartbeat, latency and alert stamps all read this one clock
        self.db = db
        self.source = source
        self.strategies = {name: importlib.import_module(f"vigil.{name}")
                           for name in cfg["strategies"]["enabled"]}
        self.control = Control(db, self.strategies, clock)
        self.executor = Executor(db, broker, self.control.is_halted, self.control.alert, self.control.kill,
                                 cfg["risk"]["venue_stops"], clock)
        self.console = console if cfg["vigil"]["console"] else None
        self.trend = Trend(cfg["market"]["trade_venue"], cfg["market_state"])
        self.book = tracker.Book(db, cfg["vigil"], self.control.alert)
        self.cycle_n = db.last_cycle()
        self.stopping = False
        self.last = None  # the last CycleRecord, for status and /why
        self.on_cycle = []  # callables(CycleRecord) after each recorded cycle, e.g. the watchdog
        self.on_inputs = []  # callables(inputs) before the decisions, e.g. the flight recorder
        self.reconciler = None  # live: async () -> (problems, notices), run at start and every few cycles
        self.trading = asyncio.Lock()  # execute+track and a flatten never interleave their orders
        self.reported = set()  # reconciliation findings already alerted: each is alerted once
        self.bad_bars = {}  # (venue, symbol) -> open time of a bar with a nan, inf or price <= 0 still in the window
        self.checkpoints = False  # a process that can be restarted keeps what the next cycle starts from
        self.config_path = None  # the file /reload reads again
        self.gaps = []  # the last reconciliation's position differences, for the operator to settle
        self.recovers = False  # a restart whose source does not replay its last cycle settles what a crash left
        self.rows_from = 0  # cycles that start before this (ms) write no row: a backtest's retention drops them

    def can_pass(self):
        """Whether a bar on which every strategy is quiet may pass without decisions: the last cycle ran clean, no
        veto holds, no change waits, and no position is one its strategy may exit on its own (EXITS)."""
        return (self.last is not None and self.control.veto is None and not self.control.failures
                and self.control.new_config is None and not self.bad_bars
                and not any(getattr(self.strategies.get(p["strategy"]), "EXITS", True)
                            for p in self.book.positions.values()))

    def flat(self):
        """Nothing open, nothing working: a bar without decisions changes nothing here but the cycle count."""
        return not self.book.positions and not self.executor.working

    def market_time(self):
        """The time an action outside a cycle is booked at, and the phone's reports end at: the last cycle's market
        time (a sim or backtest runs on its own), or the clock before any cycle."""
        return self.last["started_at"] if self.last else int(self.clock() * 1000)

    # --- the operator's orders -------------------------------------------------------------------
    async def flatten(self):
        """Closes every position now, even while halted (an explicit operator order); returns (closed, left)."""
        async with self.trading:
            self.db.put("checkpoint", None)  # trades outside a cycle: a restart before the next row reads the rows
            now = self.market_time()
            closed = 0
            for position in list(self.book.positions.values()):
                position = await self.executor.close(position, self.cycle_n + 1, now, "flatten", "flatten", force=True)
                self.book.book(position)
                closed += position["status"] == "closed"
            return closed, len(self.book.positions)

    async def recover(self):
        """Books what a crash or a late fill left: orders not final are followed, and a position whose orders
        never all left is settled (a spread left uneven is unwound)."""
        now = self.market_time()
        await self.executor.recover(self.cycle_n + 1, now)
        self.book.load()

    async def reconcile(self):
        """Resolves what the exchange can prove; anything else halts trading with every difference named."""
        if not self.reconciler:
            return
        async with self.trading:
            await self.recover()
            problems, notices, self.gaps = await self.reconciler()
        for text in problems + notices:
            if text not in self.reported:  # the same finding is alerted once, not every few cycles
                self.control.alert("reconcile", text)
        self.reported = set(problems + notices)
        if problems and not self.control.is_halted():
            self.control.kill("reconciliation: " + "; ".join(problems))

    async def force_exit(self, position_id):
        """Closes one position at market now, even while halted (the operator's order); None if it is not open."""
        async with self.trading:
            position = self.book.positions.get(position_id)
            if position is None:
                return None
            self.db.put("checkpoint", None)  # trades outside a cycle: a restart before the next row reads the rows
            now = self.market_time()
            position = await self.executor.close(position, self.cycle_n + 1, now, "forceexit", "forceexit",
                                                 force=True)
            self.book.book(position)
            return position

    async def settle_gap(self, gap, close):
        """The operator settles a difference reconciliation found: the books adopt the exchange's quantity, and
        with close the part no Vigil position explained is closed at market. Returns the positions changed."""
        async with self.trading:
            self.db.put("checkpoint", None)  # trades outside a cycle: a restart before the next row reads the rows
            now = self.market_time()
            changed = []
            for position in self.executor.adopt(gap, list(self.book.positions.values()), self.cycle_n + 1, now):
                position = await self.executor.protect(position, self.cycle_n + 1, now)  # a written-down stop
                self.book.book(position)
                if close and position["strategy"] == "operator" and position["status"] == "open":
                    position = await self.executor.close(position, self.cycle_n + 1, now, "operator close",
                                                         "operator", force=True)
                    self.book.book(position)
                changed.append(position)
        self.gaps = [g for g in self.gaps if g is not gap]
        self.reported.clear()  # a difference that remains is alerted again at the next reconciliation
        self.control.alert("reconcile", f"{gap['venue']} {gap['symbol']}: books {gap['books']:g} set to the exchange's "
                                f"{gap['exchange']:g} by the operator" + (", the rest closed at market" if close else ""))
        return changed

    # --- heartbeat ---------------------------------------------------------------------------
    async def run(self, cycles=None, interval=None):
        """Cycle k starts at t0 + k * interval; an overrun skips the missed beats and says so."""
        interval = self.cfg["vigil"]["interval"] if interval is None else interval
        await self.source.start()
        if self.reconciler:
            await self.reconcile()
        elif self.recovers:
            async with self.trading:
                await self.recover()
        gc.freeze()  # what start-up built lives as long as the process: the collector need not rescan it
        t0, k, done = self.clock(), 0, 0
        if interval > 0 and getattr(self.source, "wall_clock", False):
            # paper, live: the first cycle now, the next ones settle_s after each candle close
            t0 = t0 // interval * interval + self.cfg["vigil"]["settle_s"]
        yielded = t0
        try:
            while not self.stopping and (cycles is None or done < cycles):
                await self.cycle()
                done += 1
                if interval <= 0:
                    if self.clock() - yielded >= YIELD_EVERY_S:  # let the bot and the streams run now and then
                        await asyncio.sleep(0)
                        yielded = self.clock()
                    continue
                k += 1
                late = self.clock() - (t0 + k * interval)
                if late > 0:
                    skipped = math.ceil(late / interval)
                    k += skipped
                    log.warning("cycle %d overran the heartbeat: skipped %d beat(s)", self.cycle_n, skipped)
                    self.control.alert("overrun", f"cycle {self.cycle_n} overran: skipped {skipped} beat(s)")
                await self._sleep_until(t0 + k * interval)
        finally:
            await self.source.close()

    async def _sleep_until(self, deadline):
        while not self.stopping and self.clock() < deadline:
            await asyncio.sleep(min(0.5, deadline - self.clock()))

    def stop(self):
        """Asks the loop to stop after the current cycle (SIGINT/SIGTERM)."""
        self.stopping = True

    # --- one cycle ---------------------------------------------------------------------------
    async def cycle(self, decisions=True):
        """One cycle; without decisions (a backtest's bar every strategy is quiet on, see can_pass) its positions
        are only followed and marked."""
        if self.control.new_config:  # between cycles: no step ever sees half of a change
            for section, key, value in self.control.new_config:
                self.cfg[section][key] = value  # in place: every module holding the section sees it
            self.control.new_config = None
        started = time.perf_counter()
        n = self.cycle_n + 1
        now = await self.source.tick()
        rec = {"n": n, "started_at": now, "duration_ms": 0.0, "states": {}, "feeds": {},
               "strategies": {}, "veto": None, "verdicts": [], "orders": 0, "equity": 0.0,
               "halted": False, "notes": [], "latency_ms": None}
        self.executor.first_sent = None
        try:
            await (self._steps(n, now, rec) if decisions else self._undecided(n, now, rec))
            self.control.failures = 0
        except Halted as e:
            rec["notes"].append(str(e))
            self.book.load()  # the executor may have booked more
        except Exception as e:  # a bug or a bad answer: recorded and alerted; the loop and the bot go on
            self._failed(n, rec, e)
        rec["halted"] = self.control.is_halted()
        rec["equity"] = self.book.equity()
        rec["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
        if self.checkpoints:
            with self.db.tx():  # the row and what the next cycle starts from commit together
                self.db.add_cycle(rec)
                self.db.put("checkpoint", self._checkpoint(n))
        elif now >= self.rows_from:  # a backtest: nothing restarts it
            self.db.add_cycle(rec)  # its schema is checked by the tests, not every cycle
        self.cycle_n, self.last, self.control.in_flight = n, rec, "idle"
        if self.reconciler and n % self.cfg["live"]["reconcile_every"] == 0:
            await self.reconcile()
        if n % PRUNE_EVERY == 0:
            market, keep = self.cfg["market"], self.cfg["vigil"]["retention_days"] * 86_400_000
            self.db.prune(now - keep, market["history"] * TIMEFRAME_MS[market["timeframe"]],
                          int(self.clock() * 1000) - keep)
        if self.console:
            self.console(self._line(rec))
        for hook in self.on_cycle:
            hook(rec)
        return rec

    def _failed(self, n, rec, e):
        """A cycle that raised: the traceback to the log, the reason to the cycle row and the phone; the books
        are reloaded (the step may have stopped between an order and its position)."""
        log.exception("cycle %d failed in %s", n, self.control.in_flight)
        reason = f"cycle {n} failed in {self.control.in_flight}: {type(e).__name__}: {e}"[:500]
        rec["notes"].append(reason)
        self.control.failed(reason)
        self.book.load()

    def _checkpoint(self, n):
        """What cycle n + 1 starts from and the rows do not hold: the positions' marks (their unrealized PnL
        sizes trades), the closed PnL as summed, the running ADX/ATR/volatility, the veto as the cycle ended."""
        return {"n": n, "fill": self.db.last_fill(), "closed_pnl": self.book.closed_pnl,
                "positions": list(self.book.positions.values()), "veto": self.control.veto, "trend": self.trend.dump()}

    def restore(self, replays_exactly):
        """Goes on from the last cycle's checkpoint, so that a restart decides as the process would have.

        A crash inside a cycle can leave some of its orders, fills and positions in the rows: a source that
        replays that cycle exactly (sim) redoes it from the checkpoint, its decisions finding their orders by
        id; any other (new prices, other decisions), or trades outside a cycle since, keep the rows' positions.
        """
        self.recovers = not replays_exactly
        saved = self.db.get("checkpoint")
        if saved is None and self.cycle_n == 0:  # a crash inside the first cycle: it starts from nothing
            saved = {"n": 0, "fill": 0, "closed_pnl": 0.0, "positions": [], "veto": None, "trend": None}
        if not saved or saved["n"] != self.cycle_n:
            return
        self.trend.load(saved["trend"])
        self.control.veto = saved["veto"]
        cycles = self.db.cycles_filled_after(saved["fill"])
        if cycles and not (replays_exactly and cycles == {self.cycle_n + 1}):
            log.warning("trades since the checkpoint of cycle %d: positions taken from the database", self.cycle_n)
            return
        self.book.positions = {p["id"]: {"stop_order": None, "stop_held": False, **p} for p in saved["positions"]}  # saved before stops
        self.book.closed_pnl = saved["closed_pnl"]

    def _step(self, name):
        if self.control.halt is not None:
            raise Halted(f"halted before {name}")
        self.control.in_flight = name

    async def _steps(self, n, now, rec):
        self._step("market_state")
        candles = self._usable(self.source.candles(), rec)
        self._step("feeds")
        feeds = await self._feeds(now)
        rec["feeds"] = {"candles": candles["error"], **{k: f["error"] for k, f in feeds.items()}}  # None: ok
        bars = self._bars()
        prices = {key: bar["close"] for key, bar in bars.items()}
        inputs = {"n": n, "now": now, "candles": candles, "trend": self.trend.update(candles), "feeds": feeds,
                  "positions": list(self.book.positions.values()), "equity": self.book.equity(),
                  "day_start_equity": self.book.day_start_equity(now), "prices": prices, "veto": self.control.veto,
                  "paused": self.control.paused_names, "entries_stopped": self.control.entries_stopped}
        for hook in self.on_inputs:
            hook(inputs)
        verdicts = decide(self.cfg, self.strategies, inputs, rec, self._step,
                          lambda kind, items: self._save(n, kind, items))
        closed = self._closed_at(candles)
        self.control.set_veto(rec["veto"])
        self.control.answers(rec["feeds"], rec["strategies"])
        decided = self.clock()
        async with self.trading:
            await self._execute_and_track(n, now, rec, verdicts, feeds, bars)
        if closed:  # a source on the wall clock (paper, live): how long after the candle closed it acted
            sent = self.executor.first_sent
            rec["latency_ms"] = {"decision": round(decided * 1000 - closed),
                                 "first_order": round(sent * 1000 - closed) if sent else None}
            if decided * 1000 - closed > self.cfg["vigil"]["latency_alert_s"] * 1000:
                self.control.alert("latency", f"cycle {n} decided {(decided * 1000 - closed) / 1000:.1f} s after "
                                              "the candle closed")

    async def _undecided(self, n, now, rec):
        """A cycle without decisions: the orders are followed, the positions marked, their exits sent."""
        rec["notes"].append("no decisions: every strategy is quiet on this bar")
        self.book.day_start_equity(now)  # the day's loss limit counts from its first cycle's equity
        feeds = await self._feeds(now)
        async with self.trading:
            await self._execute_and_track(n, now, rec, [], feeds, self._bars())

    def _closed_at(self, candles):
        """When the latest closed candle of the trade venue closed (ms), for a source on the wall clock; else None."""
        if not getattr(self.source, "wall_clock", False) or not candles["ok"]:
            return None
        series = (candles["data"] or {}).get(self.cfg["market"]["trade_venue"], {}).values()
        opens = [c[-1, TS] for c in series if len(c)]
        return max(opens) + TIMEFRAME_MS[self.cfg["market"]["timeframe"]] if opens else None

    async def _execute_and_track(self, n, now, rec, verdicts, feeds, bars):
        self._step("execute")
        # Orders of this cycle number are a crashed run's of this very cycle only in a restart's first cycle (its
        # decisions reach them by id); later, they are the operator's, sent between cycles, and followed now.
        for position in (await self.executor.follow(n, now, replaying=self.last is None)).values():
            self._stop_note(self.book.positions.get(position["id"]), position, rec)
            self.book.book(position)
        acted = set()  # positions that sent an exit this cycle: the tracker sends none of its own
        for verdict, trade in verdicts:
            if trade is None:
                continue
            rec["orders"] += len(trade["legs"])
            p = trade["proposal"]
            if p["intent"] == "open":
                position = await self.executor.open(trade, n, now)
                self._stop_note(None, position, rec)
                if position["status"] != "void":
                    self.control.alert("trade", f"opened {position['id']}: {p['reason']}")
                self.book.book(position)
            elif p["position_id"] in self.book.positions:  # not if an order followed above has just closed it
                acted.add(p["position_id"])
                await self._close(self.book.positions[p["position_id"]], n, now, p["reason"], rec)

        self._step("track")
        funding = feeds["funding"]["data"] if feeds["funding"]["ok"] else None
        for pid in list(self.book.positions):
            old = self.book.positions[pid]
            position, reason, level = tracker.mark(old, bars, funding, now)
            if position["funding"] != old["funding"]:
                self.db.save_position(position)  # booked funding is money: stored at once; marks are recomputed
            self.book.positions[pid] = position
            if reason and pid not in acted:
                rec["orders"] += len(position["legs"])
                await self._close(position, n, now, reason, rec, level)
        self.control.in_flight = "record"

    async def _feeds(self, now):
        """The source's feeds, aged; a source that does I/O bounds each request itself ([feeds] timeout)."""
        feeds = await self.source.feeds(now)
        stale = self.cfg["market"]["stale_after"]
        for name in schemas.FEEDS:
            feed = feeds.get(name)
            if feed is None:
                feeds[name] = schemas.feed(error="this source has no such feed")
            elif feed["ts"] is not None:
                feed["age_s"] = (now - feed["ts"]) / 1000
                if feed["ok"] and feed["age_s"] > stale:
                    feed.update(ok=False, error=f"stale: {feed['age_s']:.0f}s old")
            where = feed is not None and feed["ok"] and schemas.nonfinite(feed["data"])
            if where:
                feed.update(ok=False, error=f"not a finite number at {where}")
        return feeds

    def _save(self, n, kind, items):
        if not items:
            return
        with self.db.tx():
            add = self.db.add_proposal if kind == "proposals" else self.db.add_verdict
            for item in items:
                add(n, item)

    async def _close(self, position, n, now, reason, rec, level=None):
        position = await self.executor.close(position, n, now, reason, level=level)
        self.book.book(position)
        if position["status"] != "closed":
            rec["notes"].append(f"exit of {position['id']} not complete yet: followed next cycle")

    @staticmethod
    def _stop_note(old, new, rec):
        """The cycle's notes (/why, the flight record) say when a venue stop was placed, replaced or fired."""
        if new["close_reason"] == "stop" and (old or {}).get("close_reason") != "stop" and new["status"] != "open":
            rec["notes"].append(f"{new['id']}: its stop at {new['stop']:g} fired at the venue")
        elif new["stop_order"] and new["stop_order"] != (old or {}).get("stop_order"):
            held = "held by the venue" if new["stop_held"] else "sent to the venue, not confirmed yet: watched by Vigil"
            rec["notes"].append(f"{new['id']}: stop at {new['stop']:g} for {new['legs'][0]['qty']:g} {held} "
                                f"({new['stop_order']})")

    def _usable(self, candles, rec):
        """The candle window without the series that hold a bar with a nan, an inf or a price <= 0: such a
        symbol stays idle (the cycle's notes say why) until that bar has left the window.

        The first cycle of a process reads every bar of the window (a restart forgets what it had found); later
        cycles read only the bar that is new."""
        for venue, by_symbol in (candles["data"] or {}).items():
            for symbol, c in by_symbol.items():
                bad = [row[TS] for row in (c if self.last is None else c[-1:]).tolist()
                       if not all(map(math.isfinite, row)) or min(row[OPEN:VOLUME]) <= 0]
                if bad:
                    self.bad_bars[(venue, symbol)] = int(bad[-1])
        if not self.bad_bars:
            return candles
        data = {}
        for venue, by_symbol in candles["data"].items():
            data[venue] = {}
            for symbol, c in by_symbol.items():
                bad = self.bad_bars.get((venue, symbol))
                if bad is not None and len(c) and c[0, TS] <= bad:
                    rec["notes"].append(f"{venue} {symbol}: the bar of {bad} is not a usable number: idle")
                    continue
                self.bad_bars.pop((venue, symbol), None)
                data[venue][symbol] = c
        return dict(candles, data=data)

    def _bars(self):
        bars, market = {}, self.cfg["market"]
        for venue in market["venues"]:
            for symbol in market["symbols"]:
                bar = self.source.bar(venue, symbol)
                if bar and (venue, symbol) not in self.bad_bars:
                    bars[(venue, symbol)] = bar
        return bars

    def _line(self, rec):
        short = {"trending": "T", "ranging": "R", "volatile": "V", "unknown": "?"}
        states = " ".join(f"{s.split('/')[0]}:{short[v]}" for s, v in rec["states"].items())
        approved = sum(1 for v in rec["verdicts"] if v["approved"])
        stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime(rec["started_at"] / 1000))
        props = sum(1 for v in rec["strategies"].values() if v.startswith(("open", "close")))
        return (f"#{rec['n']:<6} {stamp} {states} | prop {props} ok {approved} "
                f"rej {len(rec['verdicts']) - approved}{' VETO' if rec['veto'] else ''} | orders {rec['orders']} "
                f"| open {len(self.book.positions)} | eq {rec['equity']:.2f} | {rec['duration_ms']:.1f}ms"
                f"{' | HALTED' if rec['halted'] else ''}")

