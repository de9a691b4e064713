"""Renders what the books hold for a reader: per-strategy figures and the report (dict, text, equity chart), and
the operator's views the phone shows."""
import datetime
import importlib
import math
import struct
import time
import zlib

import numpy as np

from vigil.schemas import POSITION_LIVE

DAY_MS = 86_400_000
SHARPE_DAYS = 30  # daily returns below which a Sharpe ratio is noise (3 points gave -147)
DEFINITIONS = {
    "net_pnl": "realized PnL after fees and funding",
    "gross_pnl": "price PnL before fees and funding",
    "win_rate": "share of trades with net PnL > 0",
    "profit_factor": "sum of winning net PnL / |sum of losing net PnL| (none without losses)",
    "expectancy": "net PnL per trade",
    "max_drawdown": "largest peak-to-trough fall of cumulative net PnL, in quote currency and as a "
                    "fraction of the strategy's capital",
    "sharpe": "mean / sample std of daily returns x sqrt(365); a daily return is the net PnL of trades "
              "closed that UTC day / the strategy's capital; days without trades count as 0",
    "sortino": "mean daily return / sqrt(mean(min(return, 0)^2)) x sqrt(365)",
    "capital": "starting equity / number of enabled strategies that trade (a veto takes none)",
}


def capital(cfg):
    """Each trading strategy's share of the starting equity: a strategy module with TRADES = False (a veto)
    takes none, so its share is not left idle in the others' drawdown and Sharpe figures."""
    trading = [n for n in cfg["strategies"]["enabled"]
               if getattr(importlib.import_module(f"vigil.{n}"), "TRADES", True)]
    return cfg["vigil"]["starting_equity"] / max(1, len(trading))


def build(db, cfg):
    """Everything `report` shows; the same dict is printed as JSON for scripts."""
    start = cfg["vigil"]["starting_equity"]
    share = capital(cfg)
    closed = db.closed_positions()
    last = db.cycle()
    return {
        "mode": cfg["vigil"]["mode"],
        "cycles": last["n"] if last else 0,
        "starting_equity": start,
        "equity": last["equity"] if last else start,
        "capital_per_strategy": share,
        "open_positions": len(db.positions(*POSITION_LIVE)),
        "records": db.counts(),
        "strategies": summary(closed, share),
        "total": total(closed, start),
        "definitions": DEFINITIONS,
    }


def text(r):
    lines = [f"mode {r['mode']}  cycles {r['cycles']}  equity {r['equity']:.2f} "
             f"(start {r['starting_equity']:.2f})  open positions {r['open_positions']}",
             "records: " + ", ".join(f"{k} {v}" for k, v in r["records"].items()), ""]
    cols = ("trades", "win_rate", "net_pnl", "fees", "funding", "profit_factor", "expectancy",
            "max_drawdown", "sharpe", "sortino")
    lines.append(f"{'strategy':<16}" + "".join(f"{c:>14}" for c in cols))
    rows = dict(r["strategies"])
    if r["total"]:
        rows["TOTAL"] = r["total"]
    for name, f in rows.items():
        lines.append(f"{name:<16}" + "".join(f"{_fmt(f.get(c)):>14}" for c in cols))
    if not r["strategies"]:
        lines.append("(no closed trades yet)")
    few = min((f["days"] for f in rows.values()), default=SHARPE_DAYS)
    if few < SHARPE_DAYS:
        lines.append(f"(Sharpe and Sortino from as few as {few} days of returns: noise below {SHARPE_DAYS} days)")
    lines += ["", f"capital per strategy {r['capital_per_strategy']:.2f}", _definitions(r["definitions"])]
    return "\n".join(lines)


def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
    return str(v)


def _definitions(d):
    return d if isinstance(d, str) else "\n".join(f"{k}: {v}" for k, v in d.items())


def summary(closed_positions, capital):
    """{strategy: figures} for every strategy with at least one closed position."""
    by = {}
    for p in sorted(closed_positions, key=lambda p: (p["closed_at"], p["id"])):
        by.setdefault(p["strategy"], []).append(p)
    return {name: figures(trades, capital) for name, trades in by.items()}


def total(closed_positions, capital):
    """The figures of every closed position together, against the whole capital; None without any."""
    return summary([dict(p, strategy="total") for p in closed_positions], capital).get("total")


def figures(trades, capital):
    pnl = [t["realized_pnl"] for t in trades]
    wins = [x for x in pnl if x > 0]
    losses = [x for x in pnl if x < 0]
    fees = sum(t["fees"] for t in trades)
    funding = sum(t["funding"] for t in trades)
    dd = drawdown(pnl)
    daily = daily_returns(trades, capital)
    return {
        "trades": len(pnl), "wins": len(wins), "losses": len(losses),
        "win_rate": len(wins) / len(pnl),
        "avg_win": sum(wins) / len(wins) if wins else None,
        "avg_loss": sum(losses) / len(losses) if losses else None,
        "profit_factor": sum(wins) / -sum(losses) if losses else None,
        "expectancy": sum(pnl) / len(pnl),
        "gross_pnl": sum(pnl) + fees - funding, "fees": fees, "funding": funding, "net_pnl": sum(pnl),
        "max_drawdown": dd, "max_drawdown_pct": dd / capital,
        "sharpe": sharpe(daily), "sortino": sortino(daily), "days": len(daily),
    }


def drawdown(pnl):
    """Largest fall of the cumulative sum from its running peak (the curve starts at 0)."""
    peak = total = worst = 0.0
    for x in pnl:
        total += x
        peak = max(peak, total)
        worst = max(worst, peak - total)
    return worst


def daily_returns(trades, capital):
    days = {}
    for t in trades:
        day = int(t["closed_at"]) // DAY_MS
        days[day] = days.get(day, 0.0) + t["realized_pnl"] / capital
    if not days:
        return []
    return [days.get(d, 0.0) for d in range(min(days), max(days) + 1)]


def sharpe(r):
    if len(r) < 2:
        return None
    mean = sum(r) / len(r)
    sd = math.sqrt(sum((x - mean) ** 2 for x in r) / (len(r) - 1))
    return mean / sd * math.sqrt(365) if sd > 0 else None


def sortino(r):
    if len(r) < 2:
        return None
    down = math.sqrt(sum(min(x, 0.0) ** 2 for x in r) / len(r))
    return (sum(r) / len(r)) / down * math.sqrt(365) if down > 0 else None


def periods(closed_positions, unit, n, now_ms):
    """The last n UTC days, ISO weeks or months up to now_ms, newest first: [(label, {strategy: [pnl, trades]})]
    with realized PnL after fees and funding of the positions closed in each; a period without trades is empty."""
    def label(ms):
        t = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc)
        if unit == "day":
            return t.strftime("%Y-%m-%d")
        if unit == "week":
            return (t - datetime.timedelta(days=t.weekday())).strftime("week of %Y-%m-%d")
        return t.strftime("%Y-%m")
    labels, t = [], now_ms
    while len(labels) < n:  # step back a day at a time: weeks and months fall out of the labels
        if label(t) not in labels:
            labels.append(label(t))
        t -= DAY_MS
    rows = {name: {} for name in labels}
    for p in closed_positions:
        row = rows.get(label(p["closed_at"]))
        if row is not None:
            pnl = row.setdefault(p["strategy"], [0.0, 0])
            pnl[0] += p["realized_pnl"]
            pnl[1] += 1
    return [(name, rows[name]) for name in labels]


def chart(equity):
    """A PNG (bytes) of an equity curve over its drawdown, drawn with numpy and written with zlib: the equity as a
    blue line in the upper part, its fall from the running peak as red bars below, grey axes."""
    width, height, top, split, bottom, left = 800, 420, 10, 290, 410, 10
    img = np.full((height, width, 3), 255, np.uint8)
    equity = np.asarray(equity, float)
    if len(equity):
        # one column per pixel: each holds the last value of its slice of the series
        cols = np.minimum((np.arange(width - left) * len(equity)) // (width - left), len(equity) - 1)
        curve = equity[cols]
        low, high = curve.min(), curve.max()
        span = high - low or 1.0
        y = (split - 1 - (curve - low) / span * (split - 1 - top)).astype(int)
        for x in range(len(y)):  # a vertical run from the last point keeps steep moves connected
            a, b = sorted((y[x], y[x - 1] if x else y[x]))
            img[a:b + 1, left + x] = (30, 90, 200)
        fall = np.maximum.accumulate(curve) - curve
        depth = (fall / (fall.max() or 1.0) * (bottom - split - 6)).astype(int)
        for x, d in enumerate(depth):
            img[split + 3:split + 3 + d, left + x] = (210, 60, 50)
    img[top:bottom, left - 1] = img[split, left:] = img[bottom, left:] = (120, 120, 120)
    return _png(img)


def _png(img):
    """RGB uint8 rows -> PNG: each row filtered with 'none', the whole deflated once."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    height, width, _ = img.shape
    raw = b"".join(b"\0" + row.tobytes() for row in img)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


# --- the operator's views: the phone's replies -----------------------------------------------------------
def status(mode, control, book, rec):
    lines = [f"mode {mode} | " + (f"HALTED: {control.halt['reason']}" if control.halt else "running"),
             f"equity {book.equity():.2f} | open positions {len(book.positions)}"]
    if rec:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(rec["started_at"] / 1000))
        lines.append(f"last cycle #{rec['n']} at {stamp} UTC took {rec['duration_ms']:.1f} ms")
        if rec.get("latency_ms"):
            late = rec["latency_ms"]
            lines.append(f"candle close -> decision {late['decision']} ms" + (
                f", -> first order {late['first_order']} ms" if late["first_order"] is not None else ""))
        lines.append("state: " + ", ".join(f"{s} {v}" for s, v in rec["states"].items()))
        lines.append("feeds: " + ", ".join(f"{k} {'ok' if err is None else 'DOWN (' + err + ')'}"
                                            for k, err in rec["feeds"].items()))
        if rec["veto"]:
            lines.append(f"veto: {rec['veto']['reason']}")
    else:
        lines.append("no cycle yet")
    if control.paused_names:
        lines.append("paused: " + ", ".join(control.paused_names))
    return "\n".join(lines)


def positions(live):
    """One line per live position: legs, PnL, funding, and its stop with who holds it."""
    rows = []
    for p in live:
        legs = "; ".join(f"{leg['side']} {leg['qty']:g} {leg['symbol']}@{leg['venue']} "
                         f"in {leg['entry']:.2f} now {leg['mark']:.2f}" for leg in p["legs"])
        levels = "" if p["stop"] is None else f" | stop {p['stop']:g} " + (
            "held by the venue" if p["stop_held"] else "placed, not confirmed by the venue: watched by Vigil too"
            if p["stop_order"] else "watched by Vigil")
        levels += "" if p["target"] is None else f" | target {p['target']:g}"
        rows.append(f"{p['id']} [{p['strategy']}] {legs} | pnl {p['unrealized_pnl']:+.2f} "
                    f"funding {p['funding']:+.2f}{levels}{'' if p['status'] == 'open' else ' ' + p['status'].upper()}")
    return "\n".join(rows) or "no open positions"


def pnl(cfg, closed, live):
    """Realized per strategy, the open positions' unrealized PnL and funding beside it, and a total row;
    Sharpe and Sortino only from SHARPE_DAYS of returns on (fewer say how many there are)."""
    stats = summary(closed, capital(cfg))
    stats["total"] = total(closed, cfg["vigil"]["starting_equity"])
    open_ = {}
    for p in live:
        for key in (p["strategy"], "total"):
            n, upnl, funding = open_.get(key, (0, 0.0, 0.0))
            open_[key] = (n + 1, upnl + p["unrealized_pnl"], funding + p["funding"])
    rows = []
    for name in [s for s in stats if s != "total"] + sorted(set(open_) - set(stats)) + ["total"]:
        f, (n, upnl, funding) = stats.get(name), open_.get(name, (0, 0.0, 0.0))
        if f is None and not n:
            continue
        row = f"{name}: " + ("no closed trades" if f is None else
                             f"{f['trades']} trades, win {f['win_rate']:.0%}, net {f['net_pnl']:+.2f}")
        if n:
            row += f" | {n} open: unrealized {upnl:+.2f}, funding {funding:+.2f}"
        if f and f["sharpe"] is not None and f["days"] >= SHARPE_DAYS:
            row += f" | Sharpe {f['sharpe']:.2f}, Sortino {format(f['sortino'], '.2f') if f['sortino'] else '-'}"
        elif f:
            row += f" | Sharpe after {SHARPE_DAYS} days ({f['days']} so far)"
        rows.append(row)
    return "\n".join(rows) if len(rows) > 1 else "no trades yet"


def trades(closed, limit):
    rows = [f"{p['id']} [{p['strategy']}] {p['side']} {p['symbol']}: {p['close_reason']}, "
            f"pnl {p['realized_pnl']:+.2f}" for p in closed]
    return newest(rows, limit) or "no closed trades yet"


def periods_text(closed, unit, n, now_ms):
    lines = []
    for label, by in periods(closed, unit, n, now_ms):
        pnl_, count = sum(v[0] for v in by.values()), sum(v[1] for v in by.values())
        parts = ", ".join(f"{name} {v[0]:+.2f} ({v[1]})" for name, v in sorted(by.items()))
        lines.append(f"{label}: {pnl_:+.2f} ({count} trades)" + (f" | {parts}" if parts else ""))
    return "\n".join(lines)


def config_text(cfg, wanted):
    # Secrets live only in the environment: the config holds the names of their variables, never values.
    lines = ["effective config (secrets stay in the environment):"]
    for section, keys in cfg.items():
        if wanted in (None, section):
            lines.append(f"[{section}]")
            lines += [f"{k} = {', '.join(map(str, v)) if isinstance(v, list) else v}" for k, v in keys.items()]
    return "\n".join(lines)


def why(rec):
    """What each strategy answered in the cycle, the veto, the risk verdicts, the feeds down and the notes."""
    lines = [f"cycle #{rec['n']}"]
    lines += [f"{name}: {what}" for name, what in rec["strategies"].items()]
    lines.append(f"veto: {rec['veto']['reason'] if rec['veto'] else 'none'}")
    for v in rec["verdicts"]:
        failed = [f"{c['name']} {c['value']} > {c['limit']}" if c["limit"] is not None else c["name"]
                  for c in v["checks"] if not c["ok"]]
        lines.append(f"{v['proposal_id']}: {v['reason']}" + (f" (failed: {', '.join(failed)})" if failed else ""))
    lines += [f"feed {k}: {err}" for k, err in rec["feeds"].items() if err] + rec["notes"]
    return "\n".join(lines)


def newest(rows, limit):
    """rows as one message of at most limit characters; when they do not all fit, the newest (last) are kept,
    saying so."""
    rows, dropped = list(rows), 0
    while len("\n".join(rows)) > limit - 60 and len(rows) > 1:
        rows.pop(0)
        dropped += 1
    text = "\n".join(rows)
    return f"last {len(rows)} ({dropped} older do not fit one message)\n{text}" if dropped else text
