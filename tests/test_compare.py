"""`fedlada compare`: aggregation math, the job runner (reuse, failures) and one tiny end-to-end comparison."""

import json
import math
import sys

import pytest
import yaml
from typer.testing import CliRunner

from fedlada import compare as cmp
from fedlada.cli import app
from fedlada.config import dump_config

runner = CliRunner()


def rows_of(run):
    """Metrics rows from {round: {participant: (own, global, bytes_sent)}} (the server has only global)."""
    rows = []
    for t, parts in run.items():
        for p, (own, glob, sent) in parts.items():
            role = "server" if p == "server" else "client"
            common = {"round": t, "participant": p, "role": role, "n": 10, "bytes_sent": sent, "bytes_received": 0}
            if own is not None:
                rows.append({**common, "split": "local_test", "accuracy": own})
            rows.append({**common, "split": "global_test", "accuracy": glob})
    return rows


RUN_A = {
    0: {"server": (None, 0.8, 100), "client-0": (0.2, 0.1, 10), "client-1": (0.4, 0.1, 10)},
    1: {"server": (None, 0.8, 1000), "client-0": (0.3, 0.2, 50), "client-1": (0.5, 0.2, 50)},
    2: {"server": (None, 0.9, 3000), "client-0": (0.6, 0.3, 150), "client-1": (0.4, 0.5, 150)},
}
RUN_B = {
    0: {"server": (None, 0.7, 100), "client-0": (0.1, 0.0, 10), "client-1": (0.1, 0.2, 10)},
    1: {"server": (None, 0.7, 500), "client-0": (0.2, 0.2, 0), "client-1": (0.2, 0.2, 0)},
    2: {"server": (None, 0.7, 500), "client-0": (0.3, 0.2, 0), "client-1": (0.5, 0.2, 0)},
}


def test_run_values_final_gain_and_bytes_per_round():
    v = cmp.run_values(rows_of(RUN_A))
    assert v["final_round"] == 2
    assert v["client_own"] == pytest.approx(0.5) and v["client_global"] == pytest.approx(0.4)
    assert v["server_global"] == pytest.approx(0.9)
    assert v["gain_own"] == pytest.approx(0.5 - 0.3) and v["gain_global"] == pytest.approx(0.4 - 0.1)
    # each participant counted once per round although it has two rows (own and global)
    assert v["bytes_by_round"] == [120, 1100, 3300]
    assert v["bytes_per_round"] == pytest.approx((1100 + 3300) / 2)  # rounds 1..R only
    assert v["clients_own"] == {"client-0": pytest.approx(0.6), "client-1": pytest.approx(0.4)}
    assert v["per_round"]["client_own"] == pytest.approx([0.3, 0.4, 0.5])


def test_aggregate_mean_and_sample_std_over_seeds():
    runs = [{**cmp.run_values(rows_of(r)), "wall_seconds": w} for r, w in ((RUN_A, 10.0), (RUN_B, 20.0))]
    st = cmp.aggregate(runs)
    assert st["n"] == 2
    assert st["client_own"]["mean"] == pytest.approx((0.5 + 0.4) / 2)
    assert st["client_own"]["std"] == pytest.approx(math.sqrt(2) * 0.05)  # ddof=1: |a-b|/sqrt(2)
    assert st["gain_own"]["mean"] == pytest.approx((0.2 + 0.3) / 2)
    assert st["bytes_per_round"]["mean"] == pytest.approx((2200 + 500) / 2)
    assert st["wall_seconds"] == {"mean": 15.0, "std": pytest.approx(math.sqrt(50)), "n": 2}
    one = cmp.aggregate(runs[:1])
    assert one["client_own"]["std"] is None and one["client_own"]["n"] == 1
    header, body = cmp.stats_grid({"m": st})
    assert body[0][header.index("client own %")] == "45.0 ± 7.1"
    assert body[0][header.index("gain own")] == "+25.0 ± 7.1"
    assert body[0][header.index("bytes/round")] == "1.35 kB ± 1.2 kB"


def one_line(text):
    """Rich wraps long lines at the console width; compare messages with the wrapping undone."""
    return " ".join(text.split())


def tiny_yaml(tmp_path, tiny_config_dict):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict))
    return path


FAKE_RUN = """
import json, sys, pathlib
out, rounds, code = pathlib.Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
if code:
    print("boom"); sys.exit(code)
rows = [{"round": t, "participant": p, "role": "server" if p == "server" else "client", "split": "global_test",
         "accuracy": 0.5, "n": 1, "bytes_sent": 7, "bytes_received": 7} for t in range(rounds + 1) for p in ("server", "client-0")]
(out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
"""


def test_failing_run_does_not_stop_the_others_and_finished_runs_are_reused(tmp_path, tiny_config_dict, monkeypatch):
    """The scheduler with stand-in processes: `broken` fails, the runs after it still finish, a second pass reuses them."""
    scenario = tiny_yaml(tmp_path, tiny_config_dict)
    started = []

    def fake_command(job):
        started.append((job.variant.label, job.seed))
        (job.dir / "config.yaml").write_text(dump_config(job.cfg))
        code = 3 if job.variant.label == "broken" else 0
        return [sys.executable, "-c", FAKE_RUN, str(job.dir), str(job.cfg.rounds), str(code)]

    monkeypatch.setattr(cmp, "command", fake_command)
    variants = [cmp.Variant("broken", ("method=distill",)), cmp.Variant.method("standalone")]
    out = tmp_path / "cmp"
    res = cmp.compare(str(scenario), variants, [0, 1], n_jobs=1, out=out, overrides=["rounds=1"], command_line="X")
    status = {(o.job.variant.label, o.job.seed): o for o in res.outcomes}
    assert [k for k, o in status.items() if o.status == "failed"] == [("broken", 0), ("broken", 1)]
    assert status[("broken", 0)].returncode == 3 and str(out / "broken" / "seed-0" / "log.txt") in status[("broken", 0)].message
    assert "boom" in (out / "broken" / "seed-0" / "log.txt").read_text()
    assert status[("standalone", 0)].status == status[("standalone", 1)].status == "done"
    assert json.loads((out / "standalone" / "seed-1" / "done.json").read_text())["rounds"] == 1
    md = (out / "compare.md").read_text()
    assert "| `standalone` | 2 |" in md and "`broken` seed 1: exit code 3" in md
    data = json.loads((out / "compare.json").read_text())
    assert data["stats"]["standalone"]["n"] == 2 and data["stats"]["broken"]["n"] == 0
    assert data["stats"]["standalone"]["bytes_per_round"]["mean"] == 14

    started.clear()
    res = cmp.compare(str(scenario), variants[1:], [0, 1], n_jobs=2, out=out, overrides=["rounds=1"])
    assert started == [] and {o.status for o in res.outcomes} == {"reused"}


def test_compare_cli_rejects_bad_input_in_one_line(tmp_path, tiny_config_dict):
    scenario = str(tiny_yaml(tmp_path, tiny_config_dict))
    base = ["compare", "--scenario", scenario, "--seeds", "1", "--out", str(tmp_path / "c")]
    cases = {
        ("--methods", "distill,fedfoo"): "error: --methods: unknown 'fedfoo'; choose from",
        ("--methods", "distill", "--jobs", "0"): "error: --jobs 0: expected at least 1",
        ("--methods", "distill", "--set", "lada.filtr=x"): "error: lada.filtr: unknown key",
        ("--methods", "distill", "--set", "seed=3"): "error: --set seed=3: seed is chosen per run by compare",
    }
    for args, message in cases.items():
        res = runner.invoke(app, [*base, *args])
        assert res.exit_code == 2 and one_line(res.output).startswith(message), res.output
    res = runner.invoke(app, ["compare", "--scenario", "no-such-scenario", "--methods", "distill"])
    assert res.exit_code == 2 and one_line(res.output).startswith("error: --scenario 'no-such-scenario': no such YAML file or packaged scenario")
    # an existing run of another config is not silently reused
    saved = tmp_path / "c" / "distill" / "seed-0"
    saved.mkdir(parents=True)
    other = {**tiny_config_dict, "rounds": 5}
    saved.joinpath("config.yaml").write_text(yaml.safe_dump(other))
    res = runner.invoke(app, [*base, "--methods", "distill"])
    assert res.exit_code == 2 and "holds a run of another config (rounds: 5 there, 2 asked)" in one_line(res.output)


def test_compare_end_to_end_then_reuses_finished_runs(tmp_path, tiny_config_dict):
    """Two methods x two seeds of a real tiny federation, one round, two jobs; a second call runs nothing."""
    small = {"steps": 10, "batch_size": 8}
    cfg = {**tiny_config_dict, "server": {**tiny_config_dict["server"], "base": small},
           "clients": [{**c, "base": small} for c in tiny_config_dict["clients"]],
           "round": {"local": {"steps": 2, "batch_size": 8}, "transfer": {"steps": 2, "batch_size": 8},
                     "candidates": 8, "max_new_tokens": 24}}
    scenario = str(tiny_yaml(tmp_path, cfg))
    out = tmp_path / "cmp"
    args = ["compare", "--scenario", scenario, "--methods", "standalone,distill", "--seeds", "2", "--jobs", "2",
            "--out", str(out), "--set", "rounds=1", "--set", "runtime.threads=1"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    for f in ("compare.md", "compare.json", "compare_accuracy.png"):
        assert (out / f).exists()
    data = json.loads((out / "compare.json").read_text())
    assert data["methods"] == ["standalone", "distill"] and data["seeds"] == [0, 1] and data["rounds"] == 1
    for m in ("standalone", "distill"):
        assert data["stats"][m]["n"] == 2 and data["stats"][m]["bytes_per_round"]["mean"] > 0
        assert [r["seed"] for r in data["runs"][m]] == [0, 1] and data["runs"][m][0]["per_round"]["round"] == [0, 1]
        cfg = yaml.safe_load((out / m / "seed-1" / "config.yaml").read_text())
        assert cfg["method"] == m and cfg["seed"] == 1 and cfg["rounds"] == 1
    md = (out / "compare.md").read_text()
    assert "fedlada compare --scenario" in md and "| `distill` | 2 |" in md and "compare_accuracy.png" in md

    marks = {p: p.stat().st_mtime_ns for p in out.glob("*/seed-*/done.json")}
    logs = {p: p.read_text() for p in out.glob("*/seed-*/log.txt")}
    assert len(marks) == len(logs) == 4
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and one_line(again.output).count("finished before, reused") == 4, again.output
    assert {p: p.stat().st_mtime_ns for p in marks} == marks and {p: p.read_text() for p in logs} == logs
    assert json.loads((out / "compare.json").read_text())["stats"] == data["stats"]


def test_a_saved_run_differs_only_where_results_could(tiny_config_dict):
    """server.transfer_lr cannot change a run whose method never trains the server; anything else can."""
    def cfg(**kw):
        return cmp.config_from_dict({**tiny_config_dict, **kw})

    slow = {**tiny_config_dict["server"], "transfer_lr": 3e-4}
    assert cmp._config_difference(cfg(), cfg(server=slow)) is None  # distill: the server only teaches
    assert cmp._config_difference(cfg(method="fedmkt"), cfg(method="fedmkt", server=slow)) == (
        "server.transfer_lr: None there, 0.0003 asked")
    assert cmp._config_difference(cfg(runtime={"threads": 2}), cfg()) is None


def test_lada_vs_host_pairs_by_seed():
    """Differences are taken within a seed: a method pair whose means overlap can still differ in every seed."""
    def runs(own_by_seed, server=0.7):
        return {"runs": [{"seed": s, "client_own": v, "client_global": v / 2, "server_global": server}
                         for s, v in own_by_seed.items()]}

    results = {
        "distill": runs({0: 0.50, 1: 0.20, 2: 0.35}),
        "distill+lada": runs({0: 0.45, 1: 0.10, 2: 0.30, 3: 0.9}),  # seed 3 has no host run: left out
        "fedmkt": runs({0: 0.1, 1: 0.2}),
        "fedmkt+lada": runs({0: 0.2, 1: 0.1}, server=0.2),
        "standalone+lada": runs({0: 0.3}),  # no standalone run: no pair
    }
    pairs = cmp.lada_vs_host(results)
    assert list(pairs) == ["distill+lada", "fedmkt+lada"]
    d = pairs["distill+lada"]
    assert d["host"] == "distill" and d["seeds"] == [0, 1, 2]
    assert d["client_own"]["diffs"] == pytest.approx([-5.0, -10.0, -5.0])
    assert d["client_own"]["mean"] == pytest.approx(-20 / 3) and d["client_own"]["std"] == pytest.approx(math.sqrt(25 / 3))
    assert d["client_own"]["verdict"] == "lower" and d["server_global"]["verdict"] == "equal"
    m = pairs["fedmkt+lada"]
    assert m["client_own"]["verdict"] == "mixed" and m["server_global"]["diffs"] == pytest.approx([-50.0, -50.0])
    header, body = cmp.paired_grid(pairs, code=True)
    assert body[0][:3] == ["`distill+lada` − `distill`", "3", "-6.7 ± 2.9 (-5.0 / -10.0 / -5.0; lower)"]
    assert cmp.paired_grid(pairs)[1][1][0] == "fedmkt+lada − fedmkt"
