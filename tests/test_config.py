import subprocess
import sys
from pathlib import Path

import pytest

from vigil import config

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path, text):
    path = tmp_path / "v.cfg"
    path.write_text(text)
    return path


def run_check(path):
    return subprocess.run([sys.executable, "run.py", "--config", str(path), "check"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_typo_exits_2_naming_section_key_and_closest(tmp_path):
    out = run_check(write(tmp_path, "[risk]\nrisk_per_trad = 0.01\n"))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "[risk] risk_per_trad" in lines[0] and "risk_per_trade" in lines[0]


@pytest.mark.parametrize("text, needle", [
    ("[risk]\nmax_gross = lots\n", "[risk] max_gross: 'lots' is not a number"),
    ("[risk]\nmax_open_positions = 2.5\n", "[risk] max_open_positions: '2.5' is not an integer"),
    ("[risk]\nrisk_per_trade = 0.5\n", "[risk] risk_per_trade: 0.5 is outside"),
    ("[vigil]\nmode = yolo\n", "[vigil] mode: 'yolo' is not one of sim, paper, live"),
    ("[vigil]\nconsole = maybe\n", "[vigil] console: 'maybe' is not true or false"),
    ("[riks]\nmax_gross = 1\n", "[riks]: unknown section (did you mean 'risk'?)"),
    ("[strategies]\nenabled = momentum, nosuch\n", "[strategies] enabled: 'nosuch' is not a strategy module"),
    ("[vigil]\nmode = sim\nmode = live\n", "option 'mode' in section 'vigil' already exists"),
    # values that are each fine alone and contradict each other
    ("[market]\nvenues = binance, kraken\n", "[market] venues: unknown venue 'kraken'"),
    ("[market]\nvenues = bybit\n", "[market] trade_venue: 'binance' is not among [market] venues (bybit)"),
    ("[market]\nsymbols = BTC\n", "[market] symbols: 'BTC' is not BASE/QUOTE"),
    ("[market]\nsymbols = ,\n", "[market] symbols: empty"),
    ("[strategies]\nenabled = momentum, momentum\n", "[strategies] enabled: momentum named twice"),
    ("[market]\nhistory = 60\n", "[market] history: 60 candles are fewer than the 62 that [market_state]"),
    ("[market]\nhistory = 210\n[momentum]\nrange_bars = 200\n", "fewer than the 216 that [momentum]'s windows"),
    ("[market]\nhistory = 100\n[mean_reversion]\nma_bars = 150\n", "the 152 that [mean_reversion]'s windows"),
    ("[feeds]\nfunding_venues = binance, ftx\n", "[feeds] funding_venues: unknown venue 'ftx'"),
    ("[telegram]\nenabled = true\n", "[telegram] chat_ids, user_ids: the bot is enabled but nobody"),
    ("[vigil]\nlog_file = /nonexistent/dir/vigil.log\n", "[vigil] log_file: its folder /nonexistent/dir"),
])
def test_bad_values_name_the_key(tmp_path, text, needle):
    with pytest.raises(config.ConfigError) as e:
        config.load(write(tmp_path, text))
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_a_file_that_is_not_utf8_is_named_and_a_byte_order_mark_is_no_key(tmp_path):
    path = tmp_path / "latin.cfg"
    path.write_bytes("[vigil]\n# caf\xe9\ndb = x.db\n".encode("latin-1"))
    with pytest.raises(config.ConfigError) as e:
        config.load(path)
    assert "not UTF-8 text" in str(e.value)
    path.write_bytes("\ufeff[vigil]\ndb = y.db\n".encode("utf-8"))
    assert config.load(path)["vigil"]["db"] == "y.db"


def test_defaults_fill_every_key(tmp_path):
    cfg = config.load(write(tmp_path, "[vigil]\ndb = x.db\n"))
    assert cfg["vigil"]["db"] == "x.db"
    assert cfg["vigil"]["mode"] == "sim"
    for section, keys in config.TABLE.items():
        assert set(cfg[section]) == set(keys)
    for name in cfg["strategies"]["enabled"]:
        assert name in cfg  # each enabled strategy gets its own typed section


def test_no_interpolation(tmp_path):
    cfg = config.load(write(tmp_path, "[vigil]\ndb = 100%done.db\n"))
    assert cfg["vigil"]["db"] == "100%done.db"


def test_shipped_config_documents_every_key():
    """Every key of the table and of every strategy's PARAMS appears, commented, in vigil.cfg."""
    import importlib
    text = (ROOT / "vigil.cfg").read_text()
    cfg = config.load(ROOT / "vigil.cfg")
    sections = dict(config.TABLE)
    for name in cfg["strategies"]["enabled"]:
        sections[name] = importlib.import_module(f"vigil.{name}").PARAMS
    lines = text.splitlines()
    for section, keys in sections.items():
        assert f"[{section}]" in lines, section
        for key in keys:
            idx = [i for i, line in enumerate(lines) if line.lstrip("# ").startswith(f"{key} =")]
            assert idx, f"[{section}] {key} missing from vigil.cfg"
            assert lines[idx[0] - 1].startswith("#"), f"[{section}] {key} has no comment above it"


def test_shipped_config_trades_nothing_real():
    cfg = config.load(ROOT / "vigil.cfg")
    assert cfg["vigil"]["mode"] == "sim"


def test_live_needs_both_keys(tmp_path):
    path = write(tmp_path, "[vigil]\nmode = live\n")
    out = subprocess.run([sys.executable, "run.py", "--config", str(path), "--cycles", "1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "live needs --live" in out.stderr
    sim = write(tmp_path, "[vigil]\nmode = sim\n")
    out = subprocess.run([sys.executable, "run.py", "--config", str(sim), "--live", "--cycles", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "mode is sim" in out.stderr
