"""Holds what may stop trading (the operator's switches, the veto in force, cycles that keep failing) and the alerts
that say so, each persisted before anyone acts on it."""
import time

FAIL_HALT = 3  # cycles in a row that raise before trading halts


class Control:
    """What the loop checks and the bot sets: one object, so both always see the same state.

    in_flight names the step the loop is in, for a halt to record where it landed.
    """

    def __init__(self, db, strategies, clock=time.time):
        self.db = db
        self.clock = clock
        self.strategies = set(strategies)
        self.halt = db.get("halt")  # persisted: a restarted process stays halted until resume
        # Written only through this object, so memory mirrors the database and the cycle never re-reads them.
        self.paused_names = sorted(db.get("paused") or [])  # replaced, never changed in place
        self.entries_stopped = bool(db.get("entries_stopped"))  # /stopentry: exits, stops and funding go on
        self.veto = db.get("veto")
        self.in_flight = "idle"
        self.new_config = None  # (section, key, value) changes /reload validated, applied before the next cycle
        self.listeners = []  # callables(kind, text) for alerts, e.g. the Telegram bot
        self.failures = 0  # cycles in a row that raised (the loop resets it)
        self.failing, self.down = set(), set()  # strategies that fail, feeds that are down, as last alerted

    def alert(self, kind, text):
        """Stored first (the bot sends from the database, in order), then handed to the listeners."""
        self.db.add_alert(int(self.clock() * 1000), kind, text)
        for listener in self.listeners:
            listener(kind, text)

    def is_halted(self):
        return self.halt is not None

    def kill(self, reason, now_ms=None):
        """Halts now: recorded before returning, so no order can follow it."""
        self.halt = {"reason": reason, "ts": now_ms or int(self.clock() * 1000), "in_flight": self.in_flight}
        self.db.put("halt", self.halt)
        self.alert("halt", f"halted: {reason} (in flight: {self.in_flight})")
        return self.halt

    def resume(self):
        self.halt = None
        self.db.put("halt", None)
        self.alert("resume", "resumed")

    def stop_entries(self, on):
        """No strategy opens anything while on; persisted, like the halt, across restarts."""
        self.db.put("entries_stopped", on)
        self.entries_stopped = on
        self.alert("entries", "entries stopped: exits, stops and funding go on" if on else "entries allowed again")

    def paused(self):
        return set(self.paused_names)

    def set_paused(self, name, on):
        """A paused strategy opens nothing; its positions are still managed. KeyError for a strategy not running."""
        if name not in self.strategies:
            raise KeyError(name)
        paused = sorted(self.paused() | {name} if on else self.paused() - {name})
        self.db.put("paused", paused)
        self.paused_names = paused

    def set_veto(self, veto):
        """The veto the cycle decided: persisted when it changes, alerted when it turns on or off."""
        active, self.veto = self.veto, veto
        if veto != active:
            self.db.put("veto", veto)
        if bool(veto) != bool(active):
            self.alert("veto", f"veto on: {veto['reason']}" if veto else "veto off")

    def failed(self, reason):
        """A cycle raised: alerted; FAIL_HALT in a row halt trading, since every cycle would fail the same way."""
        self.alert("error", reason)
        self.failures += 1
        if self.failures >= FAIL_HALT and not self.is_halted():
            self.kill(f"{self.failures} cycles in a row failed, the last: {reason}")

    def answers(self, feeds, strategies):
        """Strategies failing and feeds going down ({name: error or None}, {name: answer}) are alerted when they
        start, and when they recover."""
        failing = {name for name, what in strategies.items() if what.startswith("error:")}
        down = {k for k, err in feeds.items() if err}
        for name in sorted(failing - self.failing):
            self.alert("error", f"strategy {name} failed: {strategies[name][7:]}")
        for name in sorted(self.failing - failing):
            self.alert("error", f"strategy {name} works again")
        for k in sorted(down - self.down):
            self.alert("feed", f"feed {k} down: {feeds[k]}")
        for k in sorted(self.down - down):
            self.alert("feed", f"feed {k} back")
        self.failing, self.down = failing, down
