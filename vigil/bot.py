"""Runs the Telegram control surface (commands and alerts) inside the orchestrator's event loop."""
import asyncio
import collections
import itertools
import logging
import os
import time
import warnings

import numpy as np
from telegram import BotCommand, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import NetworkError, RetryAfter, TelegramError
from telegram.ext import ApplicationBuilder, CallbackQueryHandler, CommandHandler, MessageHandler, filters

from vigil import config, process, report

log = logging.getLogger("vigil.bot")
CONFIRM_S = 60
MAX_TEXT = 3800  # Telegram allows 4096 characters; leave room


class Bot:
    """Deny by default: only configured chats and users get any answer at all."""

    def __init__(self, cfg, orch):
        self.cfg, self.orch, self.db = cfg, orch, orch.db
        t = cfg["telegram"]
        self.chats = {int(c) for c in t["chat_ids"]}
        self.users = {int(u) for u in t["user_ids"]}
        self.allow_groups = t["allow_groups"]
        self.pending = {}  # chat id -> (action, time asked, its button's token, the question's message)
        self.asked = 0  # questions asked: each button carries its own number, so an older one never counts
        self.chat_retry = {}  # chat id -> when a chat that refused alerts is tried again (monotonic)
        self.chat_wait = {}  # chat id -> its current wait: doubles while its sends fail, up to 30 s
        self.wake = asyncio.Event()
        self.tasks = []
        self.stopping = False
        # One table: handler and help text, used for set_my_commands and /help alike.
        self.commands = {
            "status": (self.status, "mode, halt, last cycle, equity, market state, feeds"),
            "positions": (self.positions, "open positions"),
            "pnl": (self.pnl, "per strategy: trades, win rate, Sharpe, PnL"),
            "trades": (self.trades, "last closed trades: /trades [n]"),
            "daily": (self.daily, "realized PnL per day, per strategy: /daily [n]"),
            "weekly": (self.weekly, "realized PnL per week (Monday on): /weekly [n]"),
            "monthly": (self.monthly, "realized PnL per month: /monthly [n]"),
            "balance": (self.balance, "live: the venues' wallets; sim and paper: the books' equity"),
            "config": (self.config, "the effective config: /config [SECTION] (secrets are never in it)"),
            "why": (self.why, "the last cycle's decisions and reasons"),
            "reload": (self.reload, "read the config file again; what can change live applies before the next cycle"),
            "chart": (self.chart, "equity and drawdown as a picture: /chart [strategy]"),
            "logs": (self.logs, "the last lines of the log file, secrets redacted: /logs [n]"),
            "kill": (self.kill, "halt now, mid-cycle; stays halted after a restart"),
            "resume": (self.resume, "lift the halt"),
            "flatten": (self.flatten, "close every position (asks to confirm)"),
            "adopt": (self.adopt, "differences with the exchange; /adopt N: the books take the exchange's (confirm)"),
            "closegap": (self.closegap, "/closegap N: adopt difference N, then close it at market (confirm)"),
            "pause": (self.pause, "pause a strategy: /pause NAME"),
            "forceexit": (self.forceexit, "close one position at market: /forceexit ID (confirm)"),
            "stopentry": (self.stopentry, "no new entries from any strategy; exits go on (survives a restart)"),
            "startentry": (self.startentry, "allow entries again"),
            "unpause": (self.unpause, "unpause a strategy: /unpause NAME"),
            "help": (self.help, "this list"),
        }
        api = t["api_url"].rstrip("/")
        token = os.environ.get(t["token_env"], "")
        self.app = (ApplicationBuilder().token(token).base_url(f"{api}/bot").base_file_url(f"{api}/file/bot")
                    .get_updates_read_timeout(t["poll_timeout"] + 10).build())
        # New messages only: editing an old message must not run it again.
        for name, (handler, _) in self.commands.items():
            self.app.add_handler(CommandHandler(name, self._guard(handler), filters.UpdateType.MESSAGE))
        self.app.add_handler(CallbackQueryHandler(self._guard(self.confirm)))
        self.app.add_handler(MessageHandler(filters.UpdateType.MESSAGE, self._guard(self.unknown)))
        self.app.add_error_handler(self._error)
        orch.control.listeners.append(lambda kind, text: self.wake.set())

    # --- life cycle ------------------------------------------------------------------------------
    async def start(self):
        """Starts polling and the alert sender; a Telegram failure is logged and trading goes on."""
        try:
            await self._start_app()
        except TelegramError as e:
            log.error("telegram unavailable at start (%s); alerts stay queued in the database", e)
            self.tasks.append(asyncio.create_task(self._retry_start()))
        self.tasks.append(asyncio.create_task(self._send_alerts()))
        self.tasks.append(asyncio.create_task(self._daily_summary()))

    async def _start_app(self):
        await self.app.initialize()  # getMe; returns at once when already done
        await self.app.bot.set_my_commands([BotCommand(n, h) for n, (_, h) in self.commands.items()])
        if not self.app.running:
            await self.app.start()
        await self.app.updater.start_polling(poll_interval=0.0, timeout=self.cfg["telegram"]["poll_timeout"])

    async def _retry_start(self):
        while not self.stopping:
            await asyncio.sleep(30)
            try:
                await self._start_app()
                return
            except TelegramError as e:
                log.warning("telegram still unavailable: %s", e)

    async def stop(self):
        # A flag, not only cancel(): a cancel landing inside an HTTP call can come back as a NetworkError.
        self.stopping = True
        self.wake.set()
        for task in self.tasks:
            task.cancel()
        await asyncio.wait(self.tasks, timeout=5)
        try:
            await self._flush_alerts()  # the shutdown alert goes out if Telegram answers; else it stays queued
            if self.app.updater.running:
                await self.app.updater.stop()
            if self.app.running:
                await self.app.stop()
            await self.app.shutdown()
        except TelegramError as e:
            log.warning("telegram stop: %s", e)

    # --- authorization -----------------------------------------------------------------------------
    def allowed(self, update):
        chat, user = update.effective_chat, update.effective_user
        if chat is None or user is None:
            return False
        if chat.type != "private" and not self.allow_groups:
            return False
        return chat.id in self.chats and user.id in self.users

    def _guard(self, handler):
        async def guarded(update: Update, context):
            if not self.allowed(update):
                # No answer at all: an unknown sender must not learn what this bot is.
                chat = update.effective_chat.id if update.effective_chat else None
                user = update.effective_user.id if update.effective_user else None
                text = update.effective_message.text if update.effective_message else None
                log.warning("ignored update from chat %s user %s: %r", chat, user, (text or "")[:80])
                return
            await handler(update, context)
        return guarded

    async def _reply(self, update, text, markup=None):
        await update.effective_chat.send_message(text[:MAX_TEXT], reply_markup=markup)

    # --- commands ----------------------------------------------------------------------------------
    async def status(self, update, context):
        o = self.orch
        await self._reply(update, report.status(self.cfg["vigil"]["mode"], o.control, o.book, o.last))

    async def positions(self, update, context):
        await self._reply(update, report.positions(self.orch.book.positions.values()))

    async def pnl(self, update, context):
        await self._reply(update, report.pnl(self.cfg, self.db.closed_positions(), self.orch.book.positions.values()))

    async def trades(self, update, context):
        arg = context.args[0] if context.args else "10"
        if not arg.isdigit() or not 1 <= int(arg) <= 50:
            await self._reply(update, "usage: /trades [n], n from 1 to 50")
            return
        await self._reply(update, report.trades(self.db.closed_positions(limit=int(arg)), MAX_TEXT))

    async def reload(self, update, context):
        path = self.orch.config_path
        if not path:
            await self._reply(update, "this process was not started from a config file: nothing to reload")
            return
        try:
            new = config.load(path)
        except config.ConfigError as e:
            await self._reply(update, f"reload refused, nothing changed: {e}")
            return
        live, restart = config.differences(self.cfg, new)
        pending = self.orch.control.new_config or []
        self.orch.control.new_config = pending + [(section, key, after) for section, key, _, after in live]
        lines = [f"[{s}] {k}: {b!r} -> {a!r}" for s, k, b, a in live]
        text = ("applied before the next cycle:\n" + "\n".join(lines)) if lines else "nothing to apply"
        if restart:
            text += "\nneeds a restart, unchanged for now: " + ", ".join(f"[{s}] {k}" for s, k, _, _ in restart)
        self.orch.control.alert("config", text.replace("\n", "; "))
        await self._reply(update, text)

    async def chart(self, update, context):
        name = context.args[0] if context.args else "total"
        if name == "total":
            curve = self.db.equity_curve()
        else:  # a strategy's capital plus its realized PnL, trade by trade
            pnl = [p["realized_pnl"] for p in self.db.closed_positions() if p["strategy"] == name]
            curve = list(report.capital(self.cfg) + np.cumsum([0.0] + pnl)) if pnl else []
        if len(curve) < 2:
            await self._reply(update, f"nothing to draw for '{name}' yet: /chart, or /chart with a strategy that "
                                      "has closed trades")
            return
        fall = max(peak - e for peak, e in zip(itertools.accumulate(curve, max), curve))
        await update.effective_chat.send_photo(report.chart(curve), caption=(
            f"{name}: equity {curve[-1]:.2f} (from {curve[0]:.2f}), largest drawdown {fall:.2f}"))

    async def logs(self, update, context):
        arg = context.args[0] if context.args else "20"
        if not arg.isdigit() or not 1 <= int(arg) <= 200:
            await self._reply(update, "usage: /logs [n], n from 1 to 200")
            return
        path = self.cfg["vigil"]["log_file"]
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                lines = [line.rstrip("\n") for line in collections.deque(f, maxlen=int(arg))]
        except OSError as e:
            await self._reply(update, f"no log file to read ({e.strerror or e}); [vigil] log_file sets one"
                              if path else "no log file: [vigil] log_file sets one")
            return
        for secret in process.secret_values(self.cfg):  # the file is redacted already; a secret set since is not
            lines = [line.replace(secret, "***") for line in lines]
        await self._reply(update, report.newest(lines, MAX_TEXT) or "the log is empty")

    async def daily(self, update, context):
        await self._periods(update, context, "day", 7)

    async def weekly(self, update, context):
        await self._periods(update, context, "week", 8)

    async def monthly(self, update, context):
        await self._periods(update, context, "month", 6)

    async def _periods(self, update, context, unit, default):
        arg = context.args[0] if context.args else str(default)
        if not arg.isdigit() or not 1 <= int(arg) <= 60:
            await self._reply(update, f"usage: /{'daily' if unit == 'day' else unit + 'ly'} [n], n from 1 to 60")
            return
        now = self.orch.market_time()
        await self._reply(update, report.periods_text(self.db.closed_positions(), unit, int(arg), now))

    async def balance(self, update, context):
        import ccxt
        clients = getattr(self.orch.executor.broker, "clients", None)
        if not clients:  # sim and paper trade no wallet: the books are the balance
            o = self.orch
            await self._reply(update, f"equity {o.book.equity():.2f} (start {self.cfg['vigil']['starting_equity']:.2f}, "
                                      f"closed PnL {o.book.closed_pnl:+.2f}, open positions {len(o.book.positions)})")
            return
        lines = []
        for venue, ex in clients.items():
            try:
                wallet = await ex.fetch_balance()
            except ccxt.BaseError as e:
                lines.append(f"{venue}: unavailable ({type(e).__name__})")
                continue
            lines += [f"{venue} {asset}: free {wallet['free'].get(asset) or 0:g}, used {wallet['used'].get(asset) or 0:g}, "
                      f"total {total:g}" for asset, total in sorted(wallet["total"].items()) if total]
        await self._reply(update, "\n".join(lines) or "the wallets are empty")

    async def config(self, update, context):
        # Secrets live only in the environment: the config holds the names of their variables, never values.
        wanted = context.args[0] if context.args else None
        if wanted and wanted not in self.cfg:
            await self._reply(update, f"no section [{wanted}]; sections: {', '.join(self.cfg)}")
            return
        await self._reply(update, report.config_text(self.cfg, wanted))

    async def why(self, update, context):
        await self._reply(update, report.why(self.orch.last) if self.orch.last else "no cycle yet")

    async def kill(self, update, context):
        halt = self.orch.control.kill(f"/kill from user {update.effective_user.id}")
        await self._reply(update, f"HALTED. In flight: {halt['in_flight']}. No order will be sent until /resume.")

    async def resume(self, update, context):
        if not self.orch.control.is_halted():
            await self._reply(update, "not halted: nothing to resume")
            return
        self.orch.control.resume()
        await self._reply(update, "resumed: trading goes on from the next cycle")

    async def flatten(self, update, context):
        await self._ask(update, "flatten", "Close every position", f"Close all {len(self.orch.book.positions)} open "
                                                                   "positions?")

    async def adopt(self, update, context):
        await self._gap_command(update, context, "adopt")

    async def closegap(self, update, context):
        await self._gap_command(update, context, "closegap")

    async def _gap_command(self, update, context, action):
        gaps = self.orch.gaps
        if not context.args:
            await self._reply(update, "\n".join(
                f"{i}. {g['venue']} {g['symbol']}: books {g['books']:g}, exchange {g['exchange']:g}"
                for i, g in enumerate(gaps, 1)) or "no differences with the exchange")
            return
        n = context.args[0]
        if not n.isdigit() or not 1 <= int(n) <= len(gaps):
            await self._reply(update, f"no difference {n}; /adopt lists them")
            return
        g = gaps[int(n) - 1]
        what = (f"{g['venue']} {g['symbol']}: set the books from {g['books']:g} to the exchange's {g['exchange']:g}"
                + (", then close what no Vigil position explains at market" if action == "closegap" else ""))
        await self._ask(update, f"{action}:{n}", "Confirm", what + "?")

    async def _ask(self, update, action, button, question):
        """An action that needs a second yes: the button, or the same command again within CONFIRM_S.

        A newer question (of any action) replaces the chat's older one, whose button stops working and is
        removed; a button is also removed once used or expired."""
        chat = update.effective_chat.id
        asked = self.pending.get(chat)
        if asked and asked[0] == action and time.monotonic() - asked[1] <= CONFIRM_S:
            await self._do(update, action)
            return
        if asked:
            await self._retire(chat, asked, "replaced by a newer question")
        self.asked += 1
        token = str(self.asked)
        markup = InlineKeyboardMarkup([[InlineKeyboardButton(button, callback_data=f"{action}#{token}")]])
        again = "/" + action.replace(":", " ", 1)
        text = f"{question} Press the button or send {again} again within {CONFIRM_S} s."
        message = await update.effective_chat.send_message(text[:MAX_TEXT], reply_markup=markup)
        self.pending[chat] = (action, time.monotonic(), token, message)
        self.tasks.append(asyncio.create_task(self._expire(chat, token)))

    async def _expire(self, chat, token):
        await asyncio.sleep(CONFIRM_S)
        asked = self.pending.get(chat)
        if asked and asked[2] == token:
            self.pending.pop(chat)
            await self._retire(chat, asked, "expired")

    async def _retire(self, chat, asked, why):
        """The question's button is removed and the question says why it no longer works."""
        message = asked[3]
        try:
            await message.edit_text(f"{message.text} ({why})", reply_markup=None)
        except TelegramError as e:  # the question stays as it was; its button is refused all the same
            log.warning("could not edit question %s in chat %s: %s", message.message_id, chat, e)

    async def confirm(self, update, context):
        query = update.callback_query
        await query.answer()
        chat = update.effective_chat.id
        asked = self.pending.get(chat)
        action, _, token = (query.data or "").rpartition("#")
        if asked and (action, token) == (asked[0], asked[2]) and time.monotonic() - asked[1] <= CONFIRM_S:
            await self._do(update, action)
        else:
            await self._reply(update, "that button no longer works; send the command again")

    async def _do(self, update, action):
        chat = update.effective_chat.id
        asked = self.pending.pop(chat, None)
        if asked:
            await self._retire(chat, asked, "confirmed")
        if action == "flatten":
            closed, left = await self.orch.flatten()
            await self._reply(update, f"flatten: {closed} closed, {left} still open"
                                      + (" (exits retried next cycle)" if left else ""))
            return
        name, n = action.split(":", 1)
        if name == "forceexit":
            position = await self.orch.force_exit(n)
            await self._reply(update, f"{n}: no such open position" if position is None else
                              f"{n} {position['status']}" + ("" if position["status"] == "closed" else
                                                             " (the rest is followed next cycle)"))
            return
        if int(n) > len(self.orch.gaps):
            await self._reply(update, "that difference is gone; /adopt lists them")
            return
        changed = await self.orch.settle_gap(self.orch.gaps[int(n) - 1], close=name == "closegap")
        await self._reply(update, "settled: " + "; ".join(f"{p['id']} {p['status']}" for p in changed)
                          + ". /resume when the books are right.")

    async def forceexit(self, update, context):
        pid = context.args[0] if context.args else ""
        if pid not in self.orch.book.positions:
            await self._reply(update, f"no open position '{pid}'; /positions lists them")
            return
        await self._ask(update, f"forceexit:{pid}", "Close it", f"Close {pid} at market?")

    async def stopentry(self, update, context):
        self.orch.control.stop_entries(True)
        await self._reply(update, "entries stopped: exits, stops and funding go on; /startentry to allow them")

    async def startentry(self, update, context):
        self.orch.control.stop_entries(False)
        await self._reply(update, "entries allowed again")

    async def pause(self, update, context):
        await self._set_paused(update, context, True)

    async def unpause(self, update, context):
        await self._set_paused(update, context, False)

    async def _set_paused(self, update, context, on):
        name = context.args[0] if context.args else ""
        try:
            self.orch.control.set_paused(name, on)
        except KeyError:
            await self._reply(update, f"no strategy '{name}'; running: {', '.join(self.orch.strategies)}")
            return
        await self._reply(update, f"{name} {'paused' if on else 'unpaused'}")

    async def _error(self, update, context):
        """A command that raised: the traceback to the log, one line to the operator who asked."""
        log.error("command failed", exc_info=context.error)
        if isinstance(update, Update) and self.allowed(update):
            try:
                await self._reply(update, f"that failed: {type(context.error).__name__}: {context.error}"[:300])
            except TelegramError as e:
                log.warning("could not report the failure: %s", e)

    async def unknown(self, update, context):
        await self._reply(update, "unknown command; /help lists them")

    async def help(self, update, context):
        await self._reply(update, "\n".join(f"/{n} - {h}" for n, (_, h) in self.commands.items()))

    # --- alerts ------------------------------------------------------------------------------------
    async def _send_alerts(self):
        """Sends queued alerts in order to every chat; a chat that fails waits on its own (_flush_alerts)."""
        while not self.stopping:
            try:
                if await self._flush_alerts():
                    continue
            except RetryAfter as e:
                with warnings.catch_warnings():  # PTB 22 warns this becomes a timedelta: both are handled
                    warnings.simplefilter("ignore", DeprecationWarning)
                    wait = e.retry_after
                await asyncio.sleep(wait.total_seconds() if hasattr(wait, "total_seconds") else float(wait))
                continue
            self.wake.clear()
            try:
                await asyncio.wait_for(self.wake.wait(), 5.0)
            except asyncio.TimeoutError:
                pass

    async def _flush_alerts(self):
        """Sends each chat the next batch it has not had; returns whether any chat got one.

        Each chat's progress is its own (kv alert_cursor): one chat failing neither stops the others nor makes
        them get a batch twice. A chat that refuses (blocked, not found, a bad answer) is retried a minute later.
        """
        cursors, sent = self.db.get("alert_cursor") or {}, False
        for chat in sorted(self.chats):
            if self.chat_retry.get(chat, 0) > time.monotonic():
                continue
            rows = self.db.unsent_alerts(after=cursors.get(str(chat), 0))
            if not rows:
                continue
            batch, size = [], 0
            for alert_id, ts, kind, text in rows:  # several alerts in one message: fewer calls, same order
                line = f"[{kind}] {text}"
                if batch and size + len(line) > MAX_TEXT:
                    break
                batch.append((alert_id, line[:MAX_TEXT]))
                size += len(line) + 1
            try:
                await self.app.bot.send_message(chat, "\n".join(line for _, line in batch))
            except RetryAfter:
                raise  # the Bot API asks the whole bot to wait: the sender does
            except TelegramError as e:  # this chat, or this answer: the others go on, this one is tried later
                wait = min(2 * self.chat_wait.get(chat, 0.5), 30.0) if isinstance(e, NetworkError) else 60.0
                self.chat_wait[chat] = wait
                self.chat_retry[chat] = time.monotonic() + wait
                log.warning("alerts to chat %s failed (%s: %s): retried in %.0f s", chat, type(e).__name__, e, wait)
                continue
            self.chat_wait.pop(chat, None)
            cursors[str(chat)] = batch[-1][0]
            self.db.put("alert_cursor", cursors)  # before the next send: a restart resends nothing to this chat
            sent = True
        if cursors and all(str(chat) in cursors for chat in self.chats):
            self.db.mark_alerts_sent(min(cursors[str(chat)] for chat in self.chats))
        return sent

    async def _daily_summary(self):
        hour = self.cfg["telegram"]["daily_summary_hour"]
        while not self.stopping:
            now = time.gmtime()
            day = time.strftime("%Y-%m-%d", now)
            if now.tm_hour >= hour and self.db.get("summary_day") != day:
                self.db.put("summary_day", day)
                stats = report.summary(self.db.closed_positions(), report.capital(self.cfg))
                total = sum(f["net_pnl"] for f in stats.values())
                self.orch.control.alert("summary", f"daily summary {day}: equity {self.orch.book.equity():.2f}, "
                                           f"{len(self.orch.book.positions)} open, net PnL {total:+.2f} over "
                                           f"{sum(f['trades'] for f in stats.values())} trades"
                                           f"{', HALTED' if self.orch.control.halt else ''}")
            await asyncio.sleep(60)

