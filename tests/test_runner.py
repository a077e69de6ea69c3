"""End-to-end: a 2-round tiny federation, its outputs, and exact resume."""

from conftest import run_cut_after_round_one

from fedlada.config import config_from_dict
from fedlada.runner import Runner
from fedlada.report import write_report


def _key(rows):
    """What must agree between two runs: accuracies and training losses, not timings or cache flags."""
    keep = lambda k: k in ("round", "participant", "split", "accuracy", "n") or k.startswith("loss/") and k != "loss/base"
    return [{k: v for k, v in r.items() if keep(k)} for r in rows]


def test_two_round_run_writes_outputs(tiny_config_dict, tmp_path):
    cfg = config_from_dict(tiny_config_dict)
    out = tmp_path / "run"
    rows = Runner(cfg, out).run()
    assert (out / "config.yaml").exists() and (out / "checkpoints" / "round-2" / "server").exists()
    assert not (out / "checkpoints" / "round-1").exists()  # only the latest checkpoint is kept
    assert sorted({r["round"] for r in rows}) == [0, 1, 2]
    for t in (0, 1, 2):
        at = [r for r in rows if r["round"] == t]
        assert {(r["participant"], r["split"]) for r in at} == {
            ("server", "global_test"), ("client-0", "local_test"), ("client-0", "global_test"),
            ("client-1", "local_test"), ("client-1", "global_test"),
        }
        for r in at:
            assert r["role"] == ("server" if r["participant"] == "server" else "client")
            assert 0.0 <= r["accuracy"] <= 1.0
            assert r["n"] == (24 if r["split"] == "global_test" else 12)  # global: 3 domains x 8
    # distill: in rounds >= 1 the server sent paths to both clients; clients report their transfer loss
    r1 = [r for r in rows if r["round"] == 1 and r["participant"] == "client-0"][0]
    assert r1["bytes_received"] > 0 and r1["bytes_sent"] > 0 and "samples/distill" in r1 and "seconds/local" in r1
    s1 = [r for r in rows if r["round"] == 1 and r["participant"] == "server"][0]
    assert s1["bytes_sent"] == sum(r["bytes_received"] for r in rows if r["round"] == 1 and r["split"] == "global_test" and r["role"] == "client")
    report = write_report(out)
    text = report.read_text()
    assert "| round |" in text and "client-1 (own)" in text and (out / "accuracy.png").stat().st_size > 1000


def test_resume_after_round_one_matches_uninterrupted(tiny_config_dict, tmp_path):
    cfg = config_from_dict(tiny_config_dict)
    full = Runner(cfg, tmp_path / "full").run()
    resumed = run_cut_after_round_one(cfg, tmp_path / "cut")
    assert _key(resumed) == _key(full)


def test_a_run_directory_in_use_is_refused_and_freed_when_its_run_ends(tiny_config_dict, tmp_path):
    import fcntl

    import pytest

    from fedlada.errors import FedladaError
    from fedlada.runner import LOCK

    cfg = config_from_dict(dict(tiny_config_dict, rounds=1))
    out = tmp_path / "run"
    out.mkdir()
    with open(out / LOCK, "w") as held:  # another process running in `out`
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(FedladaError, match="in use by another run"):
            Runner(cfg, out).run()
        assert sorted(p.name for p in out.iterdir()) == [LOCK]  # nothing of the other run was touched
    rows = Runner(cfg, out).run()  # the holder ended: the directory is free again
    assert sorted({r["round"] for r in rows}) == [0, 1]


def test_standalone_sends_no_paths(tiny_config_dict, tmp_path):
    tiny_config_dict["method"] = "standalone"
    rows = Runner(config_from_dict(tiny_config_dict), tmp_path / "run").run()
    r1 = [r for r in rows if r["round"] == 1 and r["participant"] == "client-0" and r["split"] == "local_test"][0]
    assert "samples/distill" not in r1 and "loss/local" in r1
