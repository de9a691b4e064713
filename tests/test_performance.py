import math

import pytest

from vigil import report

DAY = 86_400_000


def trade(day, pnl, fees=1.0, funding=0.0, strategy="s", i=0):
    return {"id": f"{day}-{i}", "strategy": strategy, "closed_at": day * DAY + 1000 * i, "realized_pnl": pnl,
            "fees": fees, "funding": funding}


def test_figures_against_hand_computed_values():
    trades = [trade(0, 100.0), trade(0, -50.0, i=1), trade(1, 30.0, funding=2.0), trade(3, -80.0),
              trade(3, 20.0, i=1)]
    f = report.summary(trades, 1000.0)["s"]
    assert f["trades"] == 5 and f["wins"] == 3 and f["losses"] == 2
    assert f["win_rate"] == pytest.approx(0.6)
    assert f["avg_win"] == pytest.approx(50.0) and f["avg_loss"] == pytest.approx(-65.0)
    assert f["profit_factor"] == pytest.approx(150 / 130)
    assert f["expectancy"] == pytest.approx(4.0)
    assert f["net_pnl"] == pytest.approx(20.0)
    assert f["fees"] == pytest.approx(5.0) and f["funding"] == pytest.approx(2.0)
    assert f["gross_pnl"] == pytest.approx(20 + 5 - 2)
    # cumulative: 100, 50, 80, 0, 20 -> peak 100, trough 0 -> drawdown 100 (10% of 1000)
    assert f["max_drawdown"] == pytest.approx(100.0) and f["max_drawdown_pct"] == pytest.approx(0.1)
    # daily returns over 1000: day0 +0.05, day1 +0.03, day2 0, day3 -0.06
    r = [0.05, 0.03, 0.0, -0.06]
    mean = 0.02 / 4  # 0.005
    sd = math.sqrt(((0.045) ** 2 + (0.025) ** 2 + (0.005) ** 2 + (0.065) ** 2) / 3)
    assert f["days"] == 4
    assert f["sharpe"] == pytest.approx(mean / sd * math.sqrt(365))
    downside = math.sqrt(0.06 ** 2 / 4)  # only day 3 is negative: sqrt(0.0036 / 4) = 0.03
    assert f["sortino"] == pytest.approx(mean / downside * math.sqrt(365))
    assert r  # the list above is the hand calculation's input


def test_single_day_has_no_sharpe_and_no_losses_no_profit_factor():
    f = report.summary([trade(0, 5.0), trade(0, 7.0, i=1)], 100.0)["s"]
    assert f["sharpe"] is None and f["sortino"] is None and f["profit_factor"] is None


def test_strategies_are_kept_apart():
    out = report.summary([trade(0, 1.0, strategy="a"), trade(0, -1.0, strategy="b")], 10.0)
    assert out["a"]["net_pnl"] == 1.0 and out["b"]["net_pnl"] == -1.0


def test_periods_sum_realized_pnl_per_day_week_and_month_per_strategy():
    day = 86_400_000
    now = 1_764_374_400_000 + 10 * 3_600_000  # Saturday 2025-11-29 10:00 UTC
    closed = [{"strategy": "a", "realized_pnl": 1.5, "closed_at": now - 1000},
              {"strategy": "b", "realized_pnl": -0.5, "closed_at": now - 2000},
              {"strategy": "a", "realized_pnl": 2.0, "closed_at": now - day},  # Friday
              {"strategy": "a", "realized_pnl": 4.0, "closed_at": now - 6 * day},  # Sunday the 23rd: last week
              {"strategy": "a", "realized_pnl": 8.0, "closed_at": now - 40 * day}]  # October
    days = report.periods(closed, "day", 3, now)
    assert days == [("2025-11-29", {"a": [1.5, 1], "b": [-0.5, 1]}), ("2025-11-28", {"a": [2.0, 1]}),
                    ("2025-11-27", {})]
    weeks = report.periods(closed, "week", 2, now)
    assert weeks == [("week of 2025-11-24", {"a": [3.5, 2], "b": [-0.5, 1]}), ("week of 2025-11-17", {"a": [4.0, 1]})]
    months = report.periods(closed, "month", 2, now)
    assert months == [("2025-11", {"a": [7.5, 3], "b": [-0.5, 1]}), ("2025-10", {"a": [8.0, 1]})]


def test_a_veto_takes_no_capital_and_few_days_of_returns_are_flagged(tmp_path):
    from vigil import config
    path = tmp_path / "v.cfg"
    path.write_text("[strategies]\nenabled = momentum, mean_reversion, sentiment_veto\n")
    assert report.capital(config.load(path)) == 5000.0  # two trading strategies share the 10,000
    closed = [trade(0, 5.0), trade(1, -2.0, i=1), trade(2, 1.0, i=2)]
    out = {"mode": "sim", "cycles": 3, "equity": 10004.0, "starting_equity": 10000.0, "open_positions": 0,
           "records": {}, "strategies": report.summary(closed, 5000.0), "total": None,
           "capital_per_strategy": 5000.0, "definitions": report.DEFINITIONS}
    assert "(Sharpe and Sortino from as few as 3 days of returns: noise below 30 days)" in report.text(out)
