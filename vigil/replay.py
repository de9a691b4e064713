"""Re-runs a recorded cycle's decisions from its flight record and compares them with what was recorded."""
import importlib
import json

from vigil import recorder
from vigil.decide import decide


def _plain(x):
    return json.loads(json.dumps(x, default=float))


def replay(db, cfg, n):
    """Returns (identical, lines to print)."""
    loaded = recorder.load(db, n)
    recorded = db.cycle(n)
    if loaded is None or recorded is None:
        return False, [f"cycle {n} has no flight record (retention, or recorded before the recorder existed)"]
    inputs, stamp = loaded
    lines = [f"cycle {n} at {inputs['now']}: recorded with config {stamp['config_hash']} code {stamp['code']}; "
             f"now config {recorder.config_hash(cfg)} code {recorder.code_version()}"]
    strategies = {name: importlib.import_module(f"vigil.{name}") for name in cfg["strategies"]["enabled"]}
    rec = {"states": {}, "strategies": {}, "veto": None, "verdicts": []}
    decide(cfg, strategies, inputs, rec)
    rec = _plain(rec)
    identical = True
    for part in ("states", "strategies", "veto", "verdicts"):
        same = rec[part] == recorded[part]
        identical &= same
        lines.append(f"{part}: {'IDENTICAL' if same else 'DIFFERENT'}")
        if part in ("states", "strategies"):
            for key in sorted(set(rec[part]) | set(recorded[part])):
                mark = "=" if rec[part].get(key) == recorded[part].get(key) else "!"
                lines.append(f"  {mark} {key}: recorded {recorded[part].get(key)!r}")
                if mark == "!":
                    lines.append(f"    replayed {rec[part].get(key)!r}")
        elif part == "veto":
            lines.append(f"  recorded {recorded['veto'] and recorded['veto']['reason']!r}; "
                         f"replayed {rec['veto'] and rec['veto']['reason']!r}")
        else:
            for old, new in zip(recorded["verdicts"], rec["verdicts"]):
                mark = "=" if old == new else "!"
                lines.append(f"  {mark} {old['proposal_id']}: {old['reason']}")
                if mark == "!":
                    lines.append(f"    replayed {new['proposal_id']}: {new['reason']}")
            if len(recorded["verdicts"]) != len(rec["verdicts"]):
                lines.append(f"  ! recorded {len(recorded['verdicts'])} verdicts, replayed {len(rec['verdicts'])}")
    lines.append("IDENTICAL" if identical else "DIFFERENT")
    return identical, lines
