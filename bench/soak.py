"""Runs 100,000 sim cycles in one process and prints resident memory and database size along the way."""
import asyncio
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vigil import cli, config  # noqa: E402


def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS"))


def main():
    cycles = int(os.environ.get("SOAK_CYCLES", "100000"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "soak.cfg"
        # One-minute bars: 100,000 cycles are about 69 days, so a 7-day retention is exercised.
        path.write_text(f"[vigil]\ndb = {tmp}/soak.db\nconsole = false\nretention_days = 7\n")
        orch = cli.build(config.load(path))
        db_file = Path(tmp) / "soak.db"

        def size():
            return sum(p.stat().st_size for p in Path(tmp).glob("soak.db*")) / 1e6

        async def go():
            await orch.source.start()
            t0 = time.time()
            for i in range(1, cycles + 1):
                await orch.cycle()
                if i in (1000, cycles) or i % 10000 == 0:
                    print(f"cycle {i:>7}: rss {rss_mb():6.1f} MB, db {size():7.1f} MB, "
                          f"rows {orch.db.counts()}, {time.time() - t0:.0f}s", flush=True)
        print(f"start: rss {rss_mb():.1f} MB, db {size():.1f} MB")
        asyncio.run(go())
        print(f"end: rss {rss_mb():.1f} MB (peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MB),"
              f" db {db_file.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
