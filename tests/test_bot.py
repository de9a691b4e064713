import asyncio
import time

from fake_telegram import FakeBotAPI
from helpers import until
from vigil import cli, config
from vigil.bot import Bot

OPERATOR, GROUP, STRANGER = 1, -100, 7


def make(tmp_path, api, monkeypatch, extra=""):
    monkeypatch.setenv("VIGIL_TELEGRAM_TOKEN", api.token)
    path = tmp_path / "v.cfg"
    path.write_text(f"[vigil]\ndb = {tmp_path}/v.db\nconsole = false\n"
                    f"[telegram]\nenabled = true\napi_url = {api.url}\nchat_ids = {OPERATOR}, {GROUP}\n"
                    f"user_ids = {OPERATOR}\nallow_groups = true\npoll_timeout = 1\n{extra}")
    cfg = config.load(path)
    return cfg, cli.build(cfg)


def replies(api, chat, since):
    """What the bot answered in chat since message index since; alert batches start with '[kind]'."""
    return [t for c, t, _ in api.sent[since:] if c == chat and not t.startswith("[")]


async def ask(api, text, chat=OPERATOR, user=OPERATOR, chat_type="private"):
    before = len(api.sent)
    api.message(text, chat, user, chat_type)
    await until(lambda: replies(api, chat, before))
    return replies(api, chat, before)[0]


def test_every_command_answers(tmp_path, monkeypatch):
    with FakeBotAPI() as api:
        cfg, orch = make(tmp_path, api, monkeypatch)

        async def go():
            await orch.run(cycles=1500, interval=0)
            bot = Bot(cfg, orch)
            await bot.start()
            try:
                assert [c["command"] for c in api.commands] == list(bot.commands)
                help_text = await ask(api, "/help")
                for name, (_, text) in bot.commands.items():
                    assert f"/{name} - {text}" in help_text
                status = await ask(api, "/status")
                assert "mode sim | running" in status and "last cycle #1500" in status and "feeds:" in status
                assert "BTC/USDT" in status
                held = await ask(api, "/positions")
                assert "[" in held or orch.book.positions == {}
                for p in orch.book.positions.values():  # each stop, and who holds it: the (simulated) venue here
                    assert p["stop"] is None or f"stop {p['stop']:g} held by the venue" in held
                pnl = (await ask(api, "/pnl")).splitlines()
                closed = orch.db.closed_positions()
                assert pnl[-1].startswith(f"total: {len(closed)} trades") and any(r.startswith("momentum:") for r in pnl)
                # 1500 sim minutes are 2 UTC days: too few for a Sharpe ratio
                assert all("Sharpe after 30 days (2 so far)" in r for r in pnl if "no closed trades" not in r)
                if orch.book.positions:  # the open positions' unrealized PnL, to the cent, in the total row
                    upnl = sum(p["unrealized_pnl"] for p in orch.book.positions.values())
                    assert f"{len(orch.book.positions)} open: unrealized {upnl:+.2f}" in pnl[-1]
                trades = (await ask(api, "/trades 3")).splitlines()
                assert len(trades) == 3 and "pnl" in trades[0]
                assert "usage: /trades [n]" in await ask(api, "/trades 0")
                await chart_is_the_equity_and_its_drawdown(api, orch)
                days = (await ask(api, "/daily 3")).splitlines()
                closed = orch.db.closed_positions()
                assert len(days) == 3 and days[0].startswith(time.strftime("%Y-%m-%d", time.gmtime(
                    orch.last["started_at"] / 1000)))
                assert f"({len(closed)} trades)" in await ask(api, "/monthly 1")  # 1500 sim minutes: one month
                assert "usage: /weekly [n]" in await ask(api, "/weekly 0")
                assert (await ask(api, "/balance")).startswith(f"equity {orch.book.equity():.2f}")
                assert "[risk]\nrisk_per_trade = " in await ask(api, "/config risk")
                assert "no section [nope]" in await ask(api, "/config nope")
                assert await ask(api, "/resume") == "not halted: nothing to resume"
                assert "no open position 'nope'" in await ask(api, "/forceexit nope")
                pid = next(iter(orch.book.positions))  # the sim holds some after 1500 cycles
                assert f"Close {pid} at market?" in await ask(api, f"/forceexit {pid}")
                assert pid in orch.book.positions  # not before the second yes
                assert (await ask(api, f"/forceexit {pid}")).startswith(pid)
                assert pid not in orch.book.positions or orch.book.positions[pid]["status"] == "closing"
                assert "entries stopped" in await ask(api, "/stopentry") and orch.control.entries_stopped
                assert await ask(api, "/startentry") == "entries allowed again" and not orch.control.entries_stopped
                assert "unknown command" in await ask(api, "/nope") and "unknown command" in await ask(api, "hi")
                why = await ask(api, "/why")
                assert why.startswith("cycle #1500") and "sentiment_veto:" in why and "veto:" in why
                assert await ask(api, "/pause momentum") == "momentum paused"
                assert "momentum" in orch.control.paused()
                assert "no strategy 'nope'" in await ask(api, "/pause nope")
                assert await ask(api, "/unpause momentum") == "momentum unpaused"
                assert "In flight: idle" in await ask(api, "/kill")
                assert orch.control.is_halted()
                assert "resumed" in await ask(api, "/resume")
                assert not orch.control.is_halted()
            finally:
                await bot.stop()
        asyncio.run(go())


def test_strangers_get_nothing(tmp_path, monkeypatch):
    with FakeBotAPI() as api:
        cfg, orch = make(tmp_path, api, monkeypatch)

        async def go():
            await orch.run(cycles=5, interval=0)
            bot = Bot(cfg, orch)
            await bot.start()
            try:
                await until(lambda: not orch.db.unsent_alerts())  # startup alerts out of the way
                sent = len(api.sent)
                api.message("/status", chat=99, user=OPERATOR)  # a chat that is not configured
                api.message("/kill", chat=GROUP, user=STRANGER, chat_type="group")  # a stranger in our group
                api.message("/help", chat=STRANGER, user=STRANGER)
                assert await ask(api, "/status", chat=GROUP, user=OPERATOR, chat_type="group")
                answered = [c for c, t, _ in api.sent[sent:] if not t.startswith("[")]
                assert answered == [GROUP]  # only the operator's answer
                assert not orch.control.is_halted()
            finally:
                await bot.stop()
        asyncio.run(go())


class Gate:
    """A broker that parks the first order until released, so /kill lands mid-execute."""

    def __init__(self, broker):
        self.broker, self.placed, self.release, self.parked = broker, [], asyncio.Event(), asyncio.Event()

    async def place(self, order):
        self.placed.append((order["id"], time.perf_counter()))
        if len(self.placed) == 1:
            self.parked.set()
            await self.release.wait()
        return await self.broker.place(order)


def test_kill_mid_execute_sends_nothing_more_and_survives_a_restart(tmp_path, monkeypatch):
    with FakeBotAPI() as api:
        cfg, orch = make(tmp_path, api, monkeypatch)
        gate = Gate(orch.executor.broker)
        orch.executor.broker = gate
        halted_at = []
        orch.control.listeners.append(lambda kind, text: kind == "halt" and halted_at.append(time.perf_counter()))

        async def go():
            bot = Bot(cfg, orch)
            await bot.start()
            try:
                loop = asyncio.create_task(orch.run(cycles=3, interval=0))
                await gate.parked.wait()  # cycle 1 approved a two-leg spread; leg 0 is at the exchange
                reply = await ask(api, "/kill")
                assert "HALTED. In flight: execute" in reply
                gate.release.set()
                await loop
            finally:
                await bot.stop()
        asyncio.run(go())
        assert len(gate.placed) == 1 and gate.placed[0][1] < halted_at[0]
        # The leg that filled before the halt is on the books, not lost.
        [held] = orch.db.positions("open")
        assert [leg["qty"] > 0 for leg in held["legs"]] == [True, False]  # the first leg only
        orch.db.close()
        again = cli.build(config.load(tmp_path / "v.cfg"))
        assert again.control.is_halted()
        asyncio.run(again.run(cycles=2, interval=0))
        assert again.db.counts()["orders"] == 1  # still halted after the restart: no new order


def test_flatten_needs_confirmation(tmp_path, monkeypatch):
    with FakeBotAPI() as api:
        cfg, orch = make(tmp_path, api, monkeypatch)

        async def go():
            await orch.run(cycles=3, interval=0)
            assert orch.book.positions
            orch.control.kill("test")  # flatten works while halted: it is the operator's explicit order
            bot = Bot(cfg, orch)
            await bot.start()
            try:
                asked = await ask(api, "/flatten")
                assert "Press the button or send /flatten again" in asked
                markup = next(m for _, t, m in api.sent if t == asked)  # alerts may have been sent since
                assert markup["inline_keyboard"][0][0]["callback_data"].startswith("flatten#")
                assert orch.book.positions
                before = len(api.sent)
                api.press("flatten")
                await until(lambda: any(t.startswith("flatten:") for t in replies(api, OPERATOR, before)))
                assert "closed, 0 still open" in replies(api, OPERATOR, before)[-1] and not orch.book.positions
                assert api.answered
                assert "no longer works" in (await ask_press(api, "flatten"))
                await until(lambda: any(e[2].endswith("(confirmed)") and e[3] is None for e in api.edits))
            finally:
                await bot.stop()

        async def ask_press(api, data):
            before = len(api.sent)
            api.press(data)
            await until(lambda: replies(api, OPERATOR, before))
            return replies(api, OPERATOR, before)[-1]
        asyncio.run(go())


def test_alerts_survive_an_outage_and_rate_limits_in_order(tmp_path, monkeypatch):
    with FakeBotAPI() as api:
        cfg, orch = make(tmp_path, api, monkeypatch)

        async def go():
            bot = Bot(cfg, orch)
            await bot.start()
            try:
                await until(lambda: not orch.db.unsent_alerts())
                api.down = True
                for i in range(5):
                    orch.control.alert("test", f"alert {i} while down")
                await asyncio.sleep(0.3)  # the sender meets the outage and backs off
                assert not any("while down" in t for t in api.texts())
                api.down = False
                api.throttle = 1  # the first send after the outage is told to wait (429)
                await until(lambda: not orch.db.unsent_alerts(), timeout=20)
            finally:
                await bot.stop()
        asyncio.run(go())
        lines = [line for t in api.texts(OPERATOR) for line in t.splitlines() if "while down" in line]
        assert lines == [f"[test] alert {i} while down" for i in range(5)]
        assert [line for t in api.texts(GROUP) for line in t.splitlines() if "while down" in line] == lines


def test_one_chat_refusing_alerts_neither_stops_nor_doubles_the_others(tmp_path, monkeypatch):
    for refusal in ("blocked", "garbage"):
        with FakeBotAPI() as api:
            (tmp_path / refusal).mkdir()
            cfg, orch = make(tmp_path / refusal, api, monkeypatch)

            async def go():
                bot = Bot(cfg, orch)
                await bot.start()
                try:
                    api.refuse[GROUP] = refusal
                    for i in range(3):
                        orch.control.alert("test", f"alert {i}")
                        await until(lambda i=i: any(f"alert {i}" in t for t in api.texts(OPERATOR)))
                    api.refuse.clear()
                    bot.chat_retry.clear()  # the group's wait is over
                    bot.wake.set()
                    await until(lambda: not orch.db.unsent_alerts(), timeout=20)
                finally:
                    await bot.stop()
            asyncio.run(go())
            for chat in (OPERATOR, GROUP):  # each chat got every alert once, in order
                lines = [line for t in api.texts(chat) for line in t.splitlines() if "] alert " in line]
                assert lines == [f"[test] alert {i}" for i in range(3)], (refusal, chat)


def test_a_difference_with_the_exchange_is_settled_only_once_confirmed(tmp_path, monkeypatch):
    with FakeBotAPI() as api:
        cfg, orch = make(tmp_path, api, monkeypatch)

        async def go():
            await orch.run(cycles=3, interval=0)
            orch.gaps = [{"venue": "binance", "symbol": "ETH/USDT", "books": 0.0, "exchange": -0.2, "mark": 2000.0}]
            orch.control.kill("reconciliation: binance ETH/USDT: the database holds 0, the exchange -0.2")
            bot = Bot(cfg, orch)
            await bot.start()
            try:
                assert await ask(api, "/adopt") == "1. binance ETH/USDT: books 0, exchange -0.2"
                assert "no difference 2" in await ask(api, "/adopt 2")
                asked = await ask(api, "/adopt 1")
                assert "set the books from 0 to the exchange's -0.2" in asked and "/adopt 1 again" in asked
                assert not [p for p in orch.book.positions.values() if p["strategy"] == "operator"]  # not before yes
                assert "no longer works" in await press(api, "flatten")  # another action's button: not this
                assert (await ask(api, "/adopt 1")).startswith("settled:")
                [adopted] = [p for p in orch.book.positions.values() if p["strategy"] == "operator"]
                assert adopted["side"] == "sell" and adopted["legs"][0]["qty"] == 0.2 and orch.control.is_halted()
                assert not orch.gaps and "by the operator" in orch.db.alerts()[-1]
            finally:
                await bot.stop()
        asyncio.run(go())


async def press(api, data, message_id=None):
    before = len(api.sent)
    api.press(data, message_id=message_id)
    await until(lambda: replies(api, OPERATOR, before))
    return replies(api, OPERATOR, before)[-1]


def test_an_older_button_never_confirms_and_every_button_goes_once_used_replaced_or_expired(tmp_path, monkeypatch):
    import vigil.bot
    with FakeBotAPI() as api:
        cfg, orch = make(tmp_path, api, monkeypatch)

        async def go():
            await orch.run(cycles=3, interval=0)
            held = len(orch.book.positions)
            assert held
            bot = Bot(cfg, orch)
            await bot.start()
            try:
                question = await ask(api, "/flatten")
                first = next(i + 1 for i, (_, t, _) in enumerate(api.sent) if t == question)  # its message id
                pid = next(iter(orch.book.positions))
                await ask(api, f"/forceexit {pid}")  # another question replaces the first
                await ask(api, "/flatten")  # and a new /flatten is pending when the first button is pressed
                assert "no longer works" in await press(api, "flatten", first)  # the old button, pressed late
                assert len(orch.book.positions) == held  # nothing was closed by it
                await until(lambda: any(e[1] == first and e[2].endswith("(replaced by a newer question)")
                                        and e[3] is None for e in api.edits))
                monkeypatch.setattr(vigil.bot, "CONFIRM_S", 0.2)
                asked = await ask(api, f"/forceexit {pid}")
                await until(lambda: any(e[2] == asked + " (expired)" and e[3] is None for e in api.edits))
                assert "no longer works" in await press(api, "forceexit")
                assert len(orch.book.positions) == held
            finally:
                await bot.stop()
        asyncio.run(go())


def test_logs_shows_the_newest_lines_redacted(tmp_path, monkeypatch):
    with FakeBotAPI() as api:
        log_file = tmp_path / "vigil.log"
        monkeypatch.setenv("BINANCE_API_SECRET", "s3cr3t-value-xyz")
        cfg, orch = make(tmp_path, api, monkeypatch)
        cfg["vigil"]["log_file"] = str(log_file)
        # as the rotating handler leaves it, plus a line something else wrote without redacting it
        log_file.write_text("".join(f"2026-11-29 03:00:{i % 60:02d} INFO vigil: line {i} {'x' * 40}\n"
                                    for i in range(300)) + "raw s3cr3t-value-xyz\n")

        async def go():
            bot = Bot(cfg, orch)
            await bot.start()
            try:
                lines = (await ask(api, "/logs 3")).splitlines()
                assert lines[0].endswith("line 298 " + "x" * 40) and lines[1].endswith("line 299 " + "x" * 40)
                assert lines[2] == "raw ***"
                many = (await ask(api, "/logs 200")).splitlines()
                assert many[0].startswith("last ") and "older do not fit one message" in many[0]
                assert many[-1] == "raw ***" and len("\n".join(many)) <= 3800
                assert "usage: /logs [n]" in await ask(api, "/logs 0")
                cfg["vigil"]["log_file"] = str(tmp_path / "gone.log")
                assert "no log file to read" in await ask(api, "/logs")
            finally:
                await bot.stop()
        asyncio.run(go())


def test_reload_applies_what_can_change_between_cycles_and_refuses_a_bad_file(tmp_path, monkeypatch):
    with FakeBotAPI() as api:
        cfg, orch = make(tmp_path, api, monkeypatch)
        path = tmp_path / "v.cfg"
        orch.config_path = str(path)
        original = path.read_text()

        async def go():
            await orch.run(cycles=2, interval=0)
            bot = Bot(cfg, orch)
            await bot.start()
            try:
                path.write_text(original + "[risk]\nrisk_per_trade = 0.004\n[market]\nsymbols = BTC/USDT\n"
                                           "[momentum]\nrange_bars = 25\n")
                answer = await ask(api, "/reload")
                assert "[risk] risk_per_trade: 0.005 -> 0.004" in answer
                assert "[momentum] range_bars: 30 -> 25" in answer
                assert "needs a restart, unchanged for now: [market] symbols" in answer
                assert orch.cfg["risk"]["risk_per_trade"] == 0.005  # not inside a cycle: before the next one
                await orch.run(cycles=1, interval=0)
                assert orch.cfg["risk"]["risk_per_trade"] == 0.004 and orch.cfg["momentum"]["range_bars"] == 25
                assert orch.cfg["market"]["symbols"] == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
                assert orch.executor.broker.params is orch.cfg["fills"]  # changed in place: holders see it
                path.write_text(original + "[risk]\nrisk_per_trade = 7\n")
                refused = await ask(api, "/reload")
                assert refused.startswith("reload refused, nothing changed: [risk] risk_per_trade")
                await orch.run(cycles=1, interval=0)
                assert orch.cfg["risk"]["risk_per_trade"] == 0.004
            finally:
                await bot.stop()
        asyncio.run(go())


def decode_png(data):
    """The RGB pixels of a PNG as the chart writes it (8-bit RGB, filter 'none' on every row)."""
    import struct
    import zlib
    import numpy as np
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        chunks[kind] = chunks.get(kind, b"") + data[pos + 8:pos + 8 + length]
        pos += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, color) == (8, 2)
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, 1 + width * 3)
    assert not rows[:, 0].any()  # every row unfiltered
    return rows[:, 1:].reshape(height, width, 3)


async def chart_is_the_equity_and_its_drawdown(api, orch):
    """/chart sends a PNG whose line spans the equity's low to high, with the axes and the drawdown bars."""
    import numpy as np
    api.message("/chart")
    await until(lambda: api.photos)
    chat, png, caption = api.photos[-1]
    curve = orch.db.equity_curve()
    assert chat == OPERATOR and caption.startswith(f"total: equity {curve[-1]:.2f}")
    img = decode_png(png)
    assert img.shape == (420, 800, 3)
    assert (img[290, 10:] == 120).all() and (img[10:410, 9] == 120).all()  # the axes
    blue = (img[:, :, 0] == 30) & (img[:, :, 2] == 200)
    rows = np.nonzero(blue)[0]
    assert rows.min() == 10 and rows.max() == 289  # the line spans the curve's low to its high
    assert blue[:, 10:].any(axis=0).all()  # one line across every column
    # the first column is the first equity, where the scale puts it
    shown = np.array(curve)[np.minimum((np.arange(790) * len(curve)) // 790, len(curve) - 1)]
    low, high = shown.min(), shown.max()
    first = np.nonzero(blue[:, 10])[0]
    assert abs(int(289 - (curve[0] - low) / (high - low) * 279) - first.max()) <= 1
    red = (img[:, :, 0] == 210) & (img[:, :, 1] == 60)
    assert red.any() == (max(np.maximum.accumulate(curve) - curve) > 0)
    assert "nothing to draw for 'nosuch'" in await ask(api, "/chart nosuch")
    api.message("/chart momentum")
    await until(lambda: len(api.photos) == 2)
    assert api.photos[-1][2].startswith("momentum: equity ")
