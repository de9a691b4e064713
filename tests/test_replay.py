import asyncio

from vigil import cli, config, flight


def test_replayed_cycles_match_the_recorded_ones(tmp_path):
    path = tmp_path / "v.cfg"
    path.write_text(f"[vigil]\ndb = {tmp_path}/v.db\nconsole = false\n")
    cfg = config.load(path)
    orch = cli.build(cfg)
    asyncio.run(orch.run(cycles=1200, interval=0))
    rows = orch.db.cycles()
    busy = [r["n"] for r in rows if r["verdicts"]]
    vetoed = [r["n"] for r in rows if r["veto"]]
    assert busy and vetoed
    for n in [1, busy[0], busy[-1], vetoed[0], 1200]:
        identical, lines = flight.replay(orch.db, cfg, n)
        assert identical, "\n".join(lines)
        assert lines[-1] == "IDENTICAL"


def test_replay_shows_a_difference(tmp_path):
    path = tmp_path / "v.cfg"
    path.write_text(f"[vigil]\ndb = {tmp_path}/v.db\nconsole = false\n")
    cfg = config.load(path)
    orch = cli.build(cfg)
    asyncio.run(orch.run(cycles=300, interval=0))
    n = next(r["n"] for r in orch.db.cycles() if r["verdicts"])
    cfg["risk"]["max_position"] = 0.01  # another config decides otherwise
    identical, lines = flight.replay(orch.db, cfg, n)
    assert not identical and "verdicts: DIFFERENT" in lines and lines[0].count("config") == 2
    assert flight.replay(orch.db, cfg, 10_000)[0] is False


def test_a_recorded_session_backtests_to_the_same_decisions(tmp_path):
    from vigil import backtest
    from vigil.flight import RecordedSource
    from vigil.storage import Storage
    path = tmp_path / "v.cfg"
    path.write_text(f"[vigil]\ndb = {tmp_path}/v.db\nconsole = false\n")
    cfg = config.load(path)
    orch = cli.build(cfg)
    asyncio.run(orch.run(cycles=800, interval=0))
    orch.db.close()
    out = backtest.run(cfg, {}, {}, str(tmp_path / "bt.db"), None, progress=None,
                       recorded=RecordedSource(str(tmp_path / "v.db")))
    assert out["backtest"]["cycles"] == 800
    live, bt = Storage(str(tmp_path / "v.db")), Storage(str(tmp_path / "bt.db"))
    for n in (1, 400, 800):
        assert bt.cycle(n)["strategies"] == live.cycle(n)["strategies"]
        assert bt.cycle(n)["verdicts"] == live.cycle(n)["verdicts"]
    assert [p["id"] for p in bt.closed_positions()] == [p["id"] for p in live.closed_positions()]
