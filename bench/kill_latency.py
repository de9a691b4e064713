"""Prints the time from a /kill update being served by the Bot API to the halt being recorded, mid-cycle."""
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fake_telegram import FakeBotAPI  # noqa: E402
from vigil import cli, config  # noqa: E402
from vigil.bot import Bot  # noqa: E402


async def one(api, tmp, k):
    path = Path(tmp) / f"k{k}.cfg"
    path.write_text(f"[vigil]\ndb = {tmp}/k{k}.db\nconsole = false\n[telegram]\nenabled = true\n"
                    f"api_url = {api.url}\nchat_ids = 1\nuser_ids = 1\npoll_timeout = 1\n"
                    "[market]\nsymbols = " + ", ".join(f"C{i}/USDT" for i in range(20)) + "\n")
    cfg = config.load(path)
    orch = cli.build(cfg)
    recorded = []
    orch.control.listeners.append(lambda kind, text: kind == "halt" and recorded.append(time.perf_counter()))
    bot = Bot(cfg, orch)
    await bot.start()
    loop = asyncio.create_task(orch.run(cycles=None, interval=0))  # cycles back to back: always mid-cycle
    await asyncio.sleep(0.5)
    update = api.message("/kill")
    while not recorded:
        await asyncio.sleep(0.001)
    orch.stop()
    await loop
    await bot.stop()
    orch.db.close()
    return (recorded[0] - api.served_at[update]) * 1000


def main():
    runs = int(os.environ.get("KILL_RUNS", "10"))
    os.environ["VIGIL_TELEGRAM_TOKEN"] = "123:TESTTOKEN"
    with tempfile.TemporaryDirectory() as tmp, FakeBotAPI() as api:
        ms = [asyncio.run(one(api, tmp, k)) for k in range(runs)]
    print(f"/kill served -> halt recorded, 20 symbols, loop busy: median {statistics.median(ms):.1f} ms, "
          f"max {max(ms):.1f} ms over {runs} runs (target < 100 ms)")


if __name__ == "__main__":
    main()
