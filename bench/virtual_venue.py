"""FakeVenues in a child process on a virtual clock it shares with the bench: at every candle close, after an
injected network delay, it pushes each stream's closed bar and its next one over WebSocket; once a cycle is done
the bench moves the clock to just before the next close, so that 200 one-minute candles take minutes, not hours.
latency.py and scale.py run on it."""
import math
import multiprocessing
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from fake_venue import MIN, FakeVenues  # noqa: E402

LEAD = 0.3  # real seconds from a jump of the clock to the next candle close
WIDE, FLAT = 0.003, 0.0001  # Bybit's funding every other candle, and everyone's otherwise


def bar(k):
    """The bar that opens at minute k, the same over REST and WebSocket."""
    return [k * MIN, 100.0 + k % 7, 108.0, 92.0, 100.0 + (k + 1) % 7, 10.0 + k % 5]


class VirtualVenues:
    """The parent's side: the clock, its jumps, and questions to the child."""

    def __init__(self, bases, venues, latency=0.1, history=400, flip_funding=False, lifetime=1800):
        ctx = multiprocessing.get_context("fork")
        self.offset = ctx.Value("d", 0.0, lock=False)  # seconds the virtual clock is ahead of time.time()
        self.pipe, self.child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, daemon=True, args=(
            (self.child, self.pipe), self.offset, bases, venues, latency, history, flip_funding, lifetime))

    def __enter__(self):
        self.proc.start()
        self.child.close()  # the child's end is the child's alone: either side sees the other go
        self.url, self.ws = self.pipe.recv()
        return self

    def __exit__(self, *exc):
        self.pipe.send("stop")
        self.proc.join(10)

    def clock(self):
        return time.time() + self.offset.value

    def jump(self, _rec=None):
        """To LEAD seconds before the next candle close (never back): an orchestrator's on_cycle hook."""
        now = self.clock()
        self.offset.value += max(0.0, (now // 60 + 1) * 60 - LEAD - now)

    def ask(self, question):
        """'orders': order requests the venue took; 'subscribes': {venue: (requests, connections, topics)};
        {name: path prefix}: {name: (public REST requests to it, seconds from the first to the last)}."""
        self.pipe.send(question)
        return self.pipe.recv()


def config(path, venue, symbols, venues, vigil="", rest=""):
    """A config file on the fake venue: vigil goes into its [vigil] section, rest after its [feeds] section."""
    links = "".join(f"[venue.{v}]\nrest_url = {venue.url}\nws_url = {venue.ws}\n" for v in ("binance", "bybit", "okx"))
    path.write_text(f"[vigil]\ndb = {path.parent}/bench.db\nconsole = false\n{vigil}"
                    f"[market]\nsymbols = {', '.join(symbols)}\nvenues = {', '.join(venues)}\n{links}"
                    f"[feeds]\nfear_greed_url = {venue.url}/fng/\n{rest}")
    return path


def _serve(pipes, offset, bases, venues, latency, history, flip_funding, lifetime):
    """The child: serves until told to stop, its parent is gone, or lifetime seconds have passed."""
    pipe, parents = pipes
    parents.close()
    with FakeVenues(bases, nodelay=True) as fake:
        fake.latency = latency
        minute = int((time.time() + offset.value) * 1000) // MIN  # the bar open now
        for v in venues:
            for b in bases:
                fake.candles[(v, b)] = [bar(k) for k in range(minute - history, minute)]
        _funding(fake, bases, minute, flip_funding)
        pipe.send((fake.url, fake.ws))
        close, end, stamps = (minute + 1) * MIN, time.time() + lifetime, []
        while time.time() < end:
            stamps += [(path, time.time()) for path, _ in fake.requests[len(stamps):]]  # when each arrived
            try:
                question = pipe.recv() if pipe.poll(0.002) else None
            except EOFError:
                return
            if question == "stop":
                return
            if question:
                pipe.send(_answer(fake, question, venues, stamps))
            if (time.time() + offset.value - latency) * 1000 >= close:
                k = close // MIN
                _funding(fake, bases, k, flip_funding)
                for v in venues:
                    for b in bases:
                        fake.candles[(v, b)].append(bar(k - 1))
                        fake.push_kline(v, b, bar(k - 1), True)
                        fake.push_kline(v, b, bar(k), False)
                close += MIN


def _funding(fake, bases, k, flip):
    for v in ("binance", "bybit", "okx"):
        for b in bases:
            rate = WIDE if flip and v == "bybit" and k % 2 == 0 else FLAT
            fake.funding[(v, b)] = (rate, (k + 240) * MIN, 8.0)


def _answer(fake, question, venues, stamps):
    if question == "orders":
        return len(fake.order_posts)
    if question == "subscribes":
        return {v: fake.subscribe_requests(v) for v in venues}
    times = {name: [t for path, t in stamps if path.startswith(prefix)] for name, prefix in question.items()}
    return {name: (len(ts), max(ts) - min(ts) if ts else 0.0) for name, ts in times.items()}


def percentile(values, q):
    """The nearest-rank percentile: a value that was measured."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else float("nan")
