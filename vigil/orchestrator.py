"""Runs the fixed-rate heartbeat and, in each cycle, the decision pipeline in DESIGN.md order."""
import asyncio
import importlib
import logging
import math
import time

from vigil import market_state, risk, schemas, tracker
from vigil.executor import Executor, Halted

log = logging.getLogger("vigil.orchestrator")
FEED_BUDGET_S = 10.0  # a slow feed never holds the cycle longer than this
PRUNE_EVERY = 500  # cycles between retention sweeps
FEEDS = ("funding", "onchain", "fear_greed", "social", "liquidations")


class Orchestrator:
    """Owns the cycle: every step's output is in the database before the next step reads it."""

    def __init__(self, cfg, db, source, broker, console=print):
        self.cfg = cfg
        self.db = db
        self.source = source
        self.executor = Executor(db, broker, self.is_halted)
        self.console = console if cfg["vigil"]["console"] else (lambda line: None)
        self.strategies = {name: importlib.import_module(f"vigil.{name}")
                           for name in cfg["strategies"]["enabled"]}
        self.positions = self._open_positions()
        self.closed_pnl = db.conn.execute("SELECT COALESCE(SUM(json_extract(body, '$.realized_pnl')), 0) "
                                          "FROM positions WHERE status='closed'").fetchone()[0]
        self.cycle_n = (db.get("last_cycle") or 0)
        self.halt = db.get("halt")  # persisted: a restarted process stays halted until resume
        self.stopping = False
        self.last = None  # the last CycleRecord, for status and /why
        self.in_flight = "idle"
        self.listeners = []  # callables(kind, text) for alerts, e.g. the Telegram bot
        self.on_cycle = []  # callables(CycleRecord) after each recorded cycle, e.g. the watchdog

    def _open_positions(self):
        return {p["id"]: p for p in self.db.positions() if p["status"] != "closed"}

    # --- control -----------------------------------------------------------------------------
    def is_halted(self):
        return self.halt is not None

    def kill(self, reason, now_ms=None):
        """Halts now: recorded before returning, so no order can follow it."""
        self.halt = {"reason": reason, "ts": now_ms or int(time.time() * 1000), "in_flight": self.in_flight}
        self.db.put("halt", self.halt)
        self.alert("halt", f"halted: {reason} (in flight: {self.in_flight})")
        return self.halt

    def resume(self):
        self.halt = None
        self.db.put("halt", None)
        self.alert("resume", "resumed")

    def paused(self):
        return set(self.db.get("paused") or [])

    def set_paused(self, name, on):
        if name not in self.strategies:
            raise KeyError(name)
        paused = self.paused() | {name} if on else self.paused() - {name}
        self.db.put("paused", sorted(paused))

    def alert(self, kind, text):
        self.db.add_alert(int(time.time() * 1000), kind, text)
        for listener in self.listeners:
            listener(kind, text)

    # --- heartbeat ---------------------------------------------------------------------------
    async def run(self, cycles=None, interval=None):
        """Cycle k starts at t0 + k * interval; an overrun skips the missed beats and says so."""
        interval = self.cfg["vigil"]["interval"] if interval is None else interval
        await self.source.start()
        loop = asyncio.get_running_loop()
        t0, k, done = loop.time(), 0, 0
        try:
            while not self.stopping and (cycles is None or done < cycles):
                await self.cycle()
                done += 1
                if interval <= 0:
                    await asyncio.sleep(0)  # let the bot and the streams run between cycles
                    continue
                k += 1
                late = loop.time() - (t0 + k * interval)
                if late > 0:
                    skipped = math.ceil(late / interval)
                    k += skipped
                    log.warning("cycle %d overran the heartbeat: skipped %d beat(s)", self.cycle_n, skipped)
                    self.alert("overrun", f"cycle {self.cycle_n} overran: skipped {skipped} beat(s)")
                await self._sleep_until(t0 + k * interval)
        finally:
            await self.source.close()

    async def _sleep_until(self, deadline):
        loop = asyncio.get_running_loop()
        while not self.stopping and loop.time() < deadline:
            await asyncio.sleep(min(0.5, deadline - loop.time()))

    def stop(self):
        """Asks the loop to stop after the current cycle (SIGINT/SIGTERM)."""
        self.stopping = True

    # --- one cycle ---------------------------------------------------------------------------
    async def cycle(self):
        started = time.perf_counter()
        n = self.cycle_n + 1
        now = await self.source.tick()
        rec = {"n": n, "started_at": now, "duration_ms": 0.0, "states": {}, "feeds": {},
               "strategies": {}, "veto": None, "verdicts": [], "orders": 0, "equity": 0.0,
               "halted": False, "notes": []}
        try:
            await self._steps(n, now, rec)
        except Halted as e:
            rec["notes"].append(str(e))
            self.positions = self._open_positions()  # the executor may have booked more
        rec["halted"] = self.is_halted()
        rec["equity"] = self.equity()
        rec["duration_ms"] = round((time.perf_counter() - started) * 1000, 3)
        with self.db.tx():
            self.db.add_cycle(schemas.validate("CycleRecord", rec))
            self.db.add_equity(now, n, rec["equity"])
            self.db.put("last_cycle", n)
        self.cycle_n, self.last, self.in_flight = n, rec, "idle"
        if n % PRUNE_EVERY == 0:
            self.db.prune(now - self.cfg["vigil"]["retention_days"] * 86_400_000)
        self.console(self._line(rec))
        for hook in self.on_cycle:
            hook(rec)
        return rec

    def _step(self, name):
        if self.is_halted():
            raise Halted(f"halted before {name}")
        self.in_flight = name

    async def _steps(self, n, now, rec):
        cfg = self.cfg
        self._step("market_state")
        candles = self.source.candles()
        states = market_state.classify_all(candles, cfg["market"]["symbols"], cfg["market"]["trade_venue"],
                                           cfg["market_state"])
        rec["states"] = {s: v["state"] for s, v in states.items()}

        self._step("feeds")
        snapshot = {"now": now, "feeds": {"candles": candles, **await self._feeds(now)}}
        rec["feeds"] = {k: (None if f["ok"] else f["error"]) for k, f in snapshot["feeds"].items()}
        for name, feed in snapshot["feeds"].items():
            if not feed["ok"]:
                rec["notes"].append(f"feed {name}: {feed['error']}")

        self._step("strategies")
        proposals, veto = self._propose(n, now, states, snapshot, rec)

        self._step("veto")
        veto = self._veto(veto, now)
        rec["veto"] = veto
        if veto:
            blocked = [p for p in proposals if p["intent"] == "open" or veto["blocks_exits"]]
            proposals = [p for p in proposals if p not in blocked]
            for p in blocked:
                rec["verdicts"].append({"proposal_id": p["id"], "approved": False, "checks": [],
                                        "reason": f"vetoed: {veto['reason']}"})
                self.db.add_verdict(n, rec["verdicts"][-1])

        self._step("risk")
        prices = self._prices()
        verdicts = risk.evaluate(proposals, {
            "now": now, "equity": self.equity(), "day_start_equity": self._day_start(now),
            "positions": list(self.positions.values()), "prices": prices}, cfg["risk"])
        with self.db.tx():
            for verdict, _ in verdicts:
                self.db.add_verdict(n, schemas.validate("Verdict", verdict))
        rec["verdicts"] += [v for v, _ in verdicts]

        self._step("execute")
        for verdict, trade in verdicts:
            if trade is None:
                continue
            rec["orders"] += len(trade["legs"])
            p = trade["proposal"]
            if p["intent"] == "open":
                position = await self.executor.open(trade, n, now)
                if position:
                    self.alert("trade", f"opened {position['id']}: {p['reason']}")
                    self._book(position)
            else:
                await self._close(self.positions[p["position_id"]], n, now, p["reason"], rec)

        self._step("track")
        funding = snapshot["feeds"]["funding"]["data"] if snapshot["feeds"]["funding"]["ok"] else None
        for pid in list(self.positions):
            position, reason = tracker.mark(self.positions[pid], prices, funding, now)
            self.db.save_position(position)
            self.positions[pid] = position
            if reason:
                rec["orders"] += len(position["legs"])
                await self._close(position, n, now, reason, rec)
        self.in_flight = "record"

    async def _feeds(self, now):
        try:
            feeds = await asyncio.wait_for(self.source.feeds(now), FEED_BUDGET_S)
        except asyncio.TimeoutError:
            feeds = {}
        for name in FEEDS:
            feeds.setdefault(name, {"data": None, "ts": None, "age_s": None, "ok": False,
                                    "error": f"no answer within {FEED_BUDGET_S:.0f}s"})
        stale = self.cfg["market"]["stale_after"]
        for name, feed in feeds.items():
            feed["age_s"] = None if feed["ts"] is None else (now - feed["ts"]) / 1000
            if feed["ok"] and feed["age_s"] is not None and feed["age_s"] > stale:
                feed.update(ok=False, error=f"stale: {feed['age_s']:.0f}s old")
        return feeds

    def _propose(self, n, now, states, snapshot, rec):
        proposals, veto, paused = [], None, self.paused()
        cfg = self.cfg
        for name, module in self.strategies.items():
            if name in paused:
                rec["strategies"][name] = "paused"
                continue
            ctx = {"name": name, "cycle": n, "now": now, "params": cfg[name],
                   "symbols": cfg["market"]["symbols"], "venues": cfg["market"]["venues"],
                   "trade_venue": cfg["market"]["trade_venue"], "market_state": states,
                   "snapshot": snapshot,
                   "positions": [p for p in self.positions.values() if p["strategy"] == name]}
            try:
                out = module.propose(ctx)
                kind = _kind(out)
                schemas.validate(kind, out) if out is not None else None
            except Exception as e:  # one strategy failing must not stop the others
                log.exception("strategy %s failed", name)
                rec["strategies"][name] = f"error: {type(e).__name__}: {e}"
                continue
            if out is None or kind == "Idle":
                rec["strategies"][name] = out["reason"] if out else "no signal"
            elif kind == "Veto":
                veto = out
                rec["strategies"][name] = f"veto: {out['reason']}"
            else:
                proposals.append(out)
                self.db.add_proposal(n, out)
                rec["strategies"][name] = f"{out['intent']} {out['side']} {out['symbol']}: {out['reason']}"
        return proposals, veto

    def _veto(self, veto, now):
        """A veto holds until its 'until'; on and off are alerted once each."""
        active = self.db.get("veto")
        if veto is None and active and active["until"] > now:
            veto = active
        if veto != active:
            self.db.put("veto", veto)
        if bool(veto) != bool(active):
            self.alert("veto", f"veto on: {veto['reason']}" if veto else "veto off")
        return veto

    async def _close(self, position, n, now, reason, rec):
        position = await self.executor.close(position, n, now, reason)
        self._book(position)
        if position["status"] != "closed":
            rec["notes"].append(f"exit of {position['id']} incomplete, retried next cycle")

    def _book(self, position):
        """Keeps the in-memory open positions and the closed PnL in step with the database."""
        if position["status"] == "closed":
            self.positions.pop(position["id"], None)
            self.closed_pnl += position["realized_pnl"]
            self.alert("trade", f"closed {position['id']} ({position['close_reason']}): "
                                f"pnl {position['realized_pnl']:+.2f}")
        else:
            self.positions[position["id"]] = position

    def _prices(self):
        prices = {}
        for venue in self.cfg["market"]["venues"]:
            for symbol in self.cfg["market"]["symbols"]:
                bar = self.source.bar(venue, symbol)
                if bar:
                    prices[(venue, symbol)] = bar["close"]
        return prices

    def equity(self):
        held = sum(p["realized_pnl"] + p["unrealized_pnl"] for p in self.positions.values())
        return self.cfg["vigil"]["starting_equity"] + self.closed_pnl + held

    def _day_start(self, now):
        day = now // 86_400_000
        stored = self.db.get("day_start")
        if not stored or stored["day"] != day:
            stored = {"day": day, "equity": self.equity()}
            self.db.put("day_start", stored)
        return stored["equity"]

    def _line(self, rec):
        short = {"trending": "T", "ranging": "R", "volatile": "V", "unknown": "?"}
        states = " ".join(f"{s.split('/')[0]}:{short[v]}" for s, v in rec["states"].items())
        approved = sum(1 for v in rec["verdicts"] if v["approved"])
        stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime(rec["started_at"] / 1000))
        props = sum(1 for v in rec["strategies"].values() if v.startswith(("open", "close")))
        return (f"#{rec['n']:<6} {stamp} {states} | prop {props} ok {approved} "
                f"rej {len(rec['verdicts']) - approved}{' VETO' if rec['veto'] else ''} | orders {rec['orders']} "
                f"| open {len(self.positions)} | eq {rec['equity']:.2f} | {rec['duration_ms']:.1f}ms"
                f"{' | HALTED' if rec['halted'] else ''}")


def _kind(out):
    if out is None:
        return None
    if "kind" in out:
        return "TradeProposal"
    return "Veto" if "until" in out else "Idle"
