"""Builds the per-strategy performance report from the database, as a dict and as plain text."""
from vigil import performance
from vigil.schemas import POSITION_LIVE


def build(db, cfg):
    """Everything `report` shows; the same dict is printed as JSON for scripts."""
    enabled = cfg["strategies"]["enabled"]
    start = cfg["vigil"]["starting_equity"]
    capital = start / max(1, len(enabled))
    closed = db.closed_positions()
    last = db.cycle()
    return {
        "mode": cfg["vigil"]["mode"],
        "cycles": last["n"] if last else 0,
        "starting_equity": start,
        "equity": last["equity"] if last else start,
        "capital_per_strategy": capital,
        "open_positions": len(db.positions(*POSITION_LIVE)),
        "records": db.counts(),
        "strategies": performance.summary(closed, capital),
        "total": performance.summary([dict(p, strategy="total") for p in closed], start).get("total"),
        "definitions": performance.DEFINITIONS,
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
