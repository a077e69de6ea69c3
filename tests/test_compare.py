"""`fedlada compare`: aggregation math, the job runner (reuse, failures) and one tiny end-to-end comparison."""

import json
import math
import sys

import pytest
import yaml
from typer.testing import CliRunner

from fedlada import compare as cmp
from fedlada.cli import app
from fedlada.compare import schedule
from fedlada.compare.planning import plan
from fedlada.compare.render import server_domain_grids, transfer_line, write_compare
from fedlada.compare.results import aggregate, lada_vs_host, own_share_summary, own_shares, run_values
from fedlada.compare.testbed import oracle_gap, scenario_check, transfer_rule
from fedlada.config import ConfigError, config_from_dict, dump_config
from fedlada.methods import results_difference

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
    v = run_values(rows_of(RUN_A))
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
    runs = [{**run_values(rows_of(r)), "wall_seconds": w} for r, w in ((RUN_A, 10.0), (RUN_B, 20.0))]
    st = aggregate(runs)
    assert st["n"] == 2
    assert st["client_own"]["mean"] == pytest.approx((0.5 + 0.4) / 2)
    assert st["client_own"]["std"] == pytest.approx(math.sqrt(2) * 0.05)  # ddof=1: |a-b|/sqrt(2)
    assert st["gain_own"]["mean"] == pytest.approx((0.2 + 0.3) / 2)
    assert st["bytes_per_round"]["mean"] == pytest.approx((2200 + 500) / 2)
    assert st["wall_seconds"] == {"mean": 15.0, "std": pytest.approx(math.sqrt(50)), "n": 2}
    one = aggregate(runs[:1])
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

    monkeypatch.setattr(schedule, "command", fake_command)
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


def test_a_run_another_process_holds_is_left_to_it_and_not_counted_as_an_attempt(tmp_path, tiny_config_dict, monkeypatch):
    import fcntl

    from fedlada.runner import LOCK

    scenario = tiny_yaml(tmp_path, tiny_config_dict)
    started = []

    def fake_command(job):
        started.append(job.seed)
        (job.dir / "config.yaml").write_text(dump_config(job.cfg))
        return [sys.executable, "-c", FAKE_RUN, str(job.dir), str(job.cfg.rounds), "0"]

    monkeypatch.setattr(schedule, "command", fake_command)
    out = tmp_path / "cmp"
    held_dir = out / "standalone" / "seed-0"
    held_dir.mkdir(parents=True)
    with open(held_dir / LOCK, "w") as held:  # another compare's `fedlada run` is working on seed 0
        fcntl.flock(held, fcntl.LOCK_EX)
        res = cmp.compare(str(scenario), [cmp.Variant.method("standalone")], [0, 1], n_jobs=1, out=out,
                          overrides=["rounds=1"])
    status = {o.job.seed: o.status for o in res.outcomes}
    assert status == {0: "busy", 1: "done"} and started == [1] and res.failed == []
    assert not (held_dir / schedule.ATTEMPTS).exists() and not (held_dir / "log.txt").exists()
    res = cmp.compare(str(scenario), [cmp.Variant.method("standalone")], [0, 1], n_jobs=1, out=out,
                      overrides=["rounds=1"])  # the holder ended: this compare runs it
    assert {o.job.seed: o.status for o in res.outcomes} == {0: "done", 1: "reused"} and started == [1, 0]


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
    other = {**tiny_config_dict, "data": {**tiny_config_dict["data"], "public": 61}}
    saved.joinpath("config.yaml").write_text(yaml.safe_dump(other))
    res = runner.invoke(app, [*base, "--methods", "distill"])
    assert res.exit_code == 2 and "holds a run of another config (data.public: 61 -> 60)" in one_line(res.output)


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
    assert "testbed check: " in res.output and "(a) transfer helps: " in res.output  # the check, on the console too
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
        return config_from_dict({**tiny_config_dict, **kw})

    slow = {**tiny_config_dict["server"], "transfer_lr": 3e-4}
    assert results_difference(cfg(), cfg(server=slow)) is None  # distill: the server only teaches
    assert results_difference(cfg(method="fedmkt"), cfg(method="fedmkt", server=slow)) == (
        "server.transfer_lr: None -> 0.0003")
    assert results_difference(cfg(runtime={"threads": 2}), cfg()) is None
    assert results_difference(cfg(lada={"reward": "heldout"}), cfg(lada={"reward": "nll_drop"})) is None  # no LaDa
    lada = {"method": "distill+lada"}
    for rule in ("oracle", "random"):  # a fixed selection rule only logs the reward
        assert results_difference(cfg(**lada, lada={"filter": rule, "reward": "heldout"}),
                                  cfg(**lada, lada={"filter": rule, "reward": "nll_drop"})) is None
    assert results_difference(cfg(**lada, lada={"reward": "heldout"}), cfg(**lada, lada={"reward": "nll_drop"})) == (
        "lada.reward: 'heldout' -> 'nll_drop'")  # the learned filter learns from it
    up = {"host_up": "up_picks", "up_loss": "lada", "up_reward": "nll_drop", "up_budget": 7, "up_min_pairs": 1}
    assert results_difference(cfg(**lada, lada=up), cfg(**lada)) is None  # distill+lada never trains the server
    assert results_difference(cfg(method="fedmkt+lada", lada={"host_up": "up_picks"}), cfg(method="fedmkt+lada")) == (
        "lada.host_up: 'up_picks' -> 'pool'")


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
    pairs = lada_vs_host(results)
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



def test_lada_vs_host_by_domain_pairs_only_the_seeds_that_have_the_domain():
    def run(seed, own, by_domain):
        return {"seed": seed, "client_own": own, "client_global": own, "server_global": 0.5, "server_by_domain": by_domain}

    results = {"distill": {"runs": [run(0, 0.5, {"add": 0.6, "mul": 0.2}), run(1, 0.5, {"add": 0.4})]},
               "distill+lada": {"runs": [run(0, 0.4, {"add": 0.5, "mul": 0.3}), run(1, 0.4, {"add": 0.5, "mul": 0.1})]}}
    d = lada_vs_host(results)["distill+lada"]
    assert d["server_by_domain"]["add"]["diffs"] == pytest.approx([-10.0, 10.0])
    assert d["server_by_domain"]["mul"]["diffs"] == pytest.approx([10.0])  # seed 1's host has no mul: not paired

# -- variant specs ----------------------------------------------------------------------------------------
def test_variant_specs_labels_overrides_and_directories():
    plain = cmp.Variant.parse(" distill+lada ")
    assert plain == cmp.Variant.method("distill+lada") and plain.dirname == "distill+lada"  # old runs reused
    v = cmp.Variant.parse("distill+lada:filter=oracle")
    assert v.label == "distill+lada:filter=oracle" and v.dirname == "distill+lada_filter-oracle"
    assert v.overrides == ("method=distill+lada", "lada.filter=oracle")
    two = cmp.Variant.parse("distill+lada : filter = eenet : reward = nll_drop")
    assert two.label == "distill+lada:filter=eenet:reward=nll_drop"
    assert two.overrides == ("method=distill+lada", "lada.filter=eenet", "lada.reward=nll_drop")
    assert two.dirname == "distill+lada_filter-eenet_reward-nll_drop"
    dotted = cmp.Variant.parse("distill:round.transfer.epochs=null")
    assert dotted.overrides == ("method=distill", "round.transfer.epochs=null")
    assert dotted.dirname == "distill_round.transfer.epochs-null"
    assert cmp.spec_parts(two.label) == ("distill+lada", {"lada.filter": "eenet", "lada.reward": "nll_drop"})
    assert cmp.spec_parts("broken") == ("broken", {})
    # characters a file system may not take are replaced; a hash keeps specs that map alike apart
    a, b = cmp.Variant.parse("distill:data.path=/tmp/a b"), cmp.Variant.parse("distill:data.path=/tmp/a?b")
    for x in (a, b):
        assert "/" not in x.dirname and " " not in x.dirname and "?" not in x.dirname
        assert x.dirname.startswith("distill_data.path--tmp-a-b-")
    assert a.dirname != b.dirname


@pytest.mark.parametrize("spec, message", [
    ("distill+lada:filter", "--methods 'distill+lada:filter': 'filter' is not key=value"),
    ("distill+lada:=oracle", "'=oracle' is not key=value"),
    (":filter=oracle", "expected METHOD[:key=value]"),
    ("distill+lada:filter=random:lada.filter=loss", "lada.filter is set twice"),
])
def test_a_bad_variant_spec_is_one_config_error(spec, message):
    with pytest.raises(ConfigError) as err:
        cmp.Variant.parse(spec)
    assert message in str(err.value)


def test_plan_applies_spec_settings_and_validates_their_keys(tmp_path, tiny_config_dict):
    scenario = tiny_yaml(tmp_path, tiny_config_dict)
    variants = [cmp.Variant.parse("distill+lada:filter=random:ref=self"), cmp.Variant.parse("distill:round.transfer.steps=7")]
    jobs = plan(scenario, variants, [0], [], tmp_path / "c", 1)
    assert jobs[0].cfg.method == "distill+lada" and jobs[0].cfg.lada.filter == "random" and jobs[0].cfg.lada.ref == "self"
    assert jobs[0].dir == tmp_path / "c" / "distill+lada_filter-random_ref-self" / "seed-0"
    assert jobs[1].cfg.method == "distill" and jobs[1].cfg.round.transfer.steps == 7
    with pytest.raises(ConfigError, match="^lada.filtr: unknown key"):
        plan(scenario, [cmp.Variant.parse("distill+lada:filtr=random")], [0], [], tmp_path / "c", 1)
    with pytest.raises(ConfigError, match="would share the run directory x"):
        plan(scenario, [cmp.Variant("a", ("method=distill",), "x"), cmp.Variant("b", ("method=distill",), "x")],
                 [0], [], tmp_path / "c", 1)


def test_compare_cli_rejects_bad_specs_in_one_line(tmp_path, tiny_config_dict):
    scenario = str(tiny_yaml(tmp_path, tiny_config_dict))
    base = ["compare", "--scenario", scenario, "--seeds", "1", "--out", str(tmp_path / "c"), "--methods"]
    cases = {
        "distill,distill+lada:filtr=x": "error: lada.filtr: unknown key",
        "distill,fedfoo:filter=oracle": "error: --methods: unknown 'fedfoo'; choose from",
        "distill+lada:filter": "error: --methods 'distill+lada:filter': 'filter' is not key=value",
    }
    for spec, message in cases.items():
        res = runner.invoke(app, [*base, spec])
        assert res.exit_code == 2 and one_line(res.output).startswith(message), res.output
    assert not (tmp_path / "c").exists()


# -- LaDa vs host, oracle gap, testbed check: hand-made numbers ----------------------------------------------
def runs_of(own_by_seed, clients0=None, by_domain=None):
    """A `collect` entry: final client own per seed, the same round 0 in every seed unless given per seed."""
    def zero(seed, x):
        return x.get(seed, x.get("all")) if isinstance(x, dict) and ("all" in x or seed in x) else x

    c0 = clients0 if clients0 is not None else {"all": {"client-0": 0.3, "client-1": 0.4}}
    dom = by_domain if by_domain is not None else {"all": {"add": 0.2, "mul": 0.5, "sub": 0.5}}
    return {"runs": [{"seed": s, "client_own": v, "client_global": v / 2, "server_global": 0.7,
                      "round0": {"clients_own": zero(s, c0), "server_by_domain": zero(s, dom)}}
                     for s, v in own_by_seed.items()], "missing": []}


ORACLE, RANDOM = "distill+lada:filter=oracle", "distill+lada:filter=random"


def test_lada_vs_host_pairs_ablations_with_the_plain_host():
    results = {
        "distill": runs_of({0: 0.50, 1: 0.20}),
        "distill+lada": runs_of({0: 0.45, 1: 0.30}),
        ORACLE: runs_of({0: 0.60, 1: 0.40}),
        "distill+lada:loss=sft": runs_of({1: 0.25}),
        "distill:round.transfer.epochs=1": runs_of({0: 0.10, 1: 0.10}),
        "distill+lada:filter=loss:round.transfer.epochs=1": runs_of({0: 0.30, 1: 0.30}),
        "fedmkt+lada:filter=random": runs_of({0: 0.3}),  # no fedmkt run: no pair
    }
    pairs = lada_vs_host(results)
    assert list(pairs) == ["distill+lada", ORACLE, "distill+lada:loss=sft", "distill+lada:filter=loss:round.transfer.epochs=1"]
    assert pairs[ORACLE]["host"] == "distill" and pairs[ORACLE]["client_own"]["diffs"] == pytest.approx([10.0, 20.0])
    assert pairs["distill+lada:loss=sft"]["host"] == "distill" and pairs["distill+lada:loss=sft"]["seeds"] == [1]
    # a variant that also changes the host's own settings is measured against the host with those settings
    assert pairs["distill+lada:filter=loss:round.transfer.epochs=1"]["host"] == "distill:round.transfer.epochs=1"
    assert pairs["distill+lada:filter=loss:round.transfer.epochs=1"]["client_own"]["diffs"] == pytest.approx([20.0, 20.0])
    _, body = cmp.paired_grid(pairs, code=True)
    assert body[1][:3] == ["`distill+lada:filter=oracle` − `distill`", "2", "+15.0 ± 7.1 (+10.0 / +20.0; higher)"]


def test_oracle_gap_recovered_per_seed_and_none_where_the_gap_is_zero():
    results = {
        "distill": runs_of({0: 0.9, 1: 0.9, 2: 0.9}),  # another method: not scaled
        ORACLE: runs_of({0: 0.8, 1: 0.6, 2: 0.5}),
        RANDOM: runs_of({0: 0.4, 1: 0.5, 2: 0.5}),  # seed 2: oracle no better than random
        "distill+lada": runs_of({0: 0.6, 1: 0.55, 2: 0.7}),
        "distill+lada:loss=sft": runs_of({0: 0.4, 1: 0.65}),  # no seed 2 run
    }
    gap = oracle_gap(results)
    assert list(gap) == ["distill+lada"]
    g = gap["distill+lada"]
    assert (g["oracle"], g["random"], g["seeds"]) == (ORACLE, RANDOM, [0, 1, 2])
    assert g["gap_points"] == pytest.approx([40.0, 10.0, 0.0])
    assert list(g["recovered"]) == ["distill+lada", "distill+lada:loss=sft"]
    plain = g["recovered"]["distill+lada"]
    assert plain["values"][:2] == pytest.approx([0.5, 0.5]) and plain["values"][2] is None
    assert plain["mean"] == pytest.approx(0.5) and plain["std"] == pytest.approx(0.0) and plain["n"] == 2
    sft = g["recovered"]["distill+lada:loss=sft"]
    assert sft["values"][:2] == pytest.approx([0.0, 1.5]) and sft["values"][2] is None and sft["mean"] == pytest.approx(0.75)
    header, body = cmp.oracle_gap_grid(g, code=True)
    assert header == ["variant", "n", "gap recovered %", "seed 0", "seed 1", "seed 2"]
    assert body[0] == [f"`{ORACLE}` − `{RANDOM}` (points)", "3", "", "+40.0", "+10.0", "+0.0"]
    assert body[1] == ["`distill+lada`", "2", "50 ± 0", "50", "50", "–"]
    assert body[2][3:] == ["0", "150", "–"]
    assert oracle_gap({k: v for k, v in results.items() if k != RANDOM}) == {}


TRANSFER = {"steps": 300, "batch_size": 64, "epochs": None}


def good_compare():
    """A compare that passes a-d: distill above standalone in both seeds, oracle +10.0 over random, clients
    at 30% and 40% at round 0, the server 30 points weaker on client-0's `add` than on its other domains."""
    results = {
        "standalone": runs_of({0: 0.40, 1: 0.45}),
        "distill": runs_of({0: 0.50, 1: 0.55}),
        ORACLE: runs_of({0: 0.70, 1: 0.60}),
        RANDOM: runs_of({0: 0.60, 1: 0.50}),
    }
    configs = {label: {"data": {"client_domains": [["add"], ["mul"]]}, "round": {"transfer": dict(TRANSFER)}} for label in results}
    return results, configs


def test_scenario_check_passes_a_good_testbed():
    results, configs = good_compare()
    check = scenario_check(results, configs)
    assert check["line"] == "testbed check: PASS (a–d)" and check["status"] == "pass"
    assert {k: c["status"] for k, c in check["conditions"].items()} == dict.fromkeys("abcd", "pass")
    b = check["conditions"]["b"]
    assert b["mean_points"] == pytest.approx(10.0) and [p["diff_points"] for p in b["per_seed"]] == pytest.approx([10.0, 10.0])
    d = check["conditions"]["d"]["per_seed"][0]
    assert (d["domain"], d["client"]) == ("add", "client-0") and d["margin_points"] == pytest.approx(30.0)
    assert check["transfer"] == dict.fromkeys(results, "300 steps (batch 64)")
    lines = cmp.check_lines(check, code=True)
    assert lines[0] == "testbed check: PASS (a–d)" and lines[-1] == "- transfer phases: 300 steps (batch 64)"
    assert "- (a) transfer helps: PASS, `distill` − `standalone`, final client own (points): seed 0 +10.0, seed 1 +10.0" in lines
    assert any(x.startswith("- (d) clients know what the server lacks: PASS") and "`add` (client-0) 20.0% vs 50.0%" in x for x in lines)


def test_scenario_check_flags_distill_below_standalone_in_one_seed():
    results, configs = good_compare()
    results["distill"] = runs_of({0: 0.50, 1: 0.44})
    check = scenario_check(results, configs)
    a = check["conditions"]["a"]
    assert a["status"] == "fail" and [p["diff_points"] for p in a["per_seed"]] == pytest.approx([10.0, -1.0])
    assert check["status"] == "fail" and check["line"] == "testbed check: FAIL (a failed; b, c, d passed)"
    assert "seed 1 -1.0" in cmp.check_lines(check)[1]


@pytest.mark.parametrize("oracle, status", [({0: 0.70, 1: 0.60}, "pass"), ({0: 0.699, 1: 0.599}, "fail"),
                                            ({0: 0.72, 1: 0.58}, "pass")])  # +12 and +8: the mean counts
def test_selection_matters_needs_ten_points_on_average(oracle, status):
    results, configs = good_compare()
    results[ORACLE] = runs_of(oracle)
    assert scenario_check(results, configs)["conditions"]["b"]["status"] == status


@pytest.mark.parametrize("client, status", [(0.04, "fail"), (0.05, "fail"), (0.06, "pass"), (0.89, "pass"), (0.90, "fail")])
def test_no_floor_or_ceiling_at_round_zero(client, status):
    results, configs = good_compare()
    zero = {0: {"client-0": 0.3, "client-1": 0.4}, 1: {"client-0": 0.3, "client-1": client}}
    results = {label: runs_of({r["seed"]: r["client_own"] for r in e["runs"]}, clients0=zero) for label, e in results.items()}
    c = scenario_check(results, configs)["conditions"]["c"]
    assert c["status"] == status
    assert c["per_seed"][1]["outside"] == ({"client-1": client} if status == "fail" else {})
    assert c["per_seed"][1]["min"] == pytest.approx(min(0.3, client))


@pytest.mark.parametrize("add, status", [(0.31, "fail"), (0.30, "pass"), (0.10, "pass")])
def test_server_lacks_a_client_domain_by_twenty_points(add, status):
    results, configs = good_compare()
    # seed 0 always passes (add at 20%); seed 1 decides
    dom = {0: {"add": 0.2, "mul": 0.5, "sub": 0.5}, 1: {"add": add, "mul": 0.5, "sub": 0.5}}
    results = {label: runs_of({r["seed"]: r["client_own"] for r in e["runs"]}, by_domain=dom) for label, e in results.items()}
    d = scenario_check(results, configs)["conditions"]["d"]
    assert d["status"] == status and d["per_seed"][1]["margin_points"] == pytest.approx(100 * (0.5 - add))
    assert [p["pass"] for p in d["per_seed"]] == [True, status == "pass"]


def test_server_lacks_picks_the_weakest_client_domain():
    """`sub` is no client's domain, so the server being weak there says nothing about the clients."""
    results, configs = good_compare()
    dom = {"all": {"add": 0.45, "mul": 0.6, "sub": 0.05}}
    results = {label: runs_of({r["seed"]: r["client_own"] for r in e["runs"]}, by_domain=dom) for label, e in results.items()}
    d = scenario_check(results, configs)["conditions"]["d"]
    assert d["status"] == "fail" and d["per_seed"][0]["domain"] == "add"
    assert d["per_seed"][0]["margin_points"] == pytest.approx(100 * ((0.6 + 0.05) / 2 - 0.45))


def test_scenario_check_says_what_it_could_not_measure():
    results, configs = good_compare()
    partial = {k: v for k, v in results.items() if k not in ("standalone", RANDOM)}
    check = scenario_check(partial, configs)
    cond = check["conditions"]
    assert cond["a"]["status"] == cond["b"]["status"] == "not measured"
    assert cond["a"]["why"] == "not measured: needs finished runs of `distill` and `standalone` of a common seed"
    assert cond["b"]["why"] == f"not measured: needs variants `{ORACLE}` and `{RANDOM}`"
    assert check["status"] == "incomplete" and check["line"] == "testbed check: INCOMPLETE (c, d passed; a, b not measured)"
    assert "  (b) selection matters: not measured: needs variants distill+lada:filter=oracle" in cmp.check_lines(check)[2]
    # d: no client domains in the config is not measurable; no per-domain server rows is not measured
    no_domains = {label: {"round": {"transfer": TRANSFER}} for label in results}
    assert scenario_check(results, no_domains)["conditions"]["d"]["why"] == (
        "not measurable: the config sets no data.client_domains")
    old = {label: runs_of({r["seed"]: r["client_own"] for r in e["runs"]}, by_domain={"all": {}}) for label, e in results.items()}
    assert scenario_check(old, configs)["conditions"]["d"]["why"].startswith(
        "not measured: needs round-0 server rows with accuracy_by_domain/<domain>")
    empty = scenario_check({"distill": {"runs": [], "missing": []}}, {})
    assert {c["status"] for c in empty["conditions"].values()} == {"not measured"}
    assert empty["line"] == "testbed check: INCOMPLETE (a, b, c, d not measured)"


def test_transfer_phase_rule_per_variant_when_they_differ():
    assert transfer_rule({"round": {"transfer": {"steps": 300, "batch_size": 64, "epochs": 2.0}}}) == (
        "2 epochs, capped at 300 steps (batch 64)")
    assert transfer_rule({"round": {"transfer": {"steps": 250, "batch_size": 32}}}) == "250 steps (batch 32)"
    rules = {"a": "300 steps (batch 64)", "b": "2 epochs, capped at 300 steps (batch 64)", "c": "300 steps (batch 64)"}
    assert transfer_line(rules, code=True) == (
        "transfer phases: `a`, `c`: 300 steps (batch 64); `b`: 2 epochs, capped at 300 steps (batch 64)")
    assert transfer_line({"a": "300 steps (batch 64)"}) == "transfer phases: 300 steps (batch 64)"


def test_round_zero_values_come_from_the_metrics_rows():
    rows = rows_of(RUN_A)
    for r in rows:
        if r["participant"] == "server" and r["round"] == 0:
            r.update({"accuracy_by_domain/add": 0.25, "accuracy_by_domain/mul": 0.75})
    zero = run_values(rows)["round0"]
    assert zero == {"clients_own": {"client-0": 0.2, "client-1": 0.4}, "server_by_domain": {"add": 0.25, "mul": 0.75}}
    assert run_values(rows_of(RUN_B))["round0"]["server_by_domain"] == {}


def write_fake_run(d, cfg, rows):
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(dump_config(cfg))
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "done.json").write_text(json.dumps({"wall_seconds": 1.0, "rounds": cfg.rounds, "processes": 1}))


def test_write_compare_puts_the_check_on_top_and_the_oracle_gap_in(tmp_path, tiny_config_dict):
    """compare.md and compare.json from hand-written finished runs (no model is trained)."""
    scenario = tiny_yaml(tmp_path, tiny_config_dict)
    # compare reads a variant's role from its label; the config behind this "oracle" does not matter here
    oracle = cmp.Variant(ORACLE, ("method=distill+lada", "lada.filter=loss"), "oracle-stand-in")
    variants = [cmp.Variant.parse(s) for s in ("standalone", "distill", "distill+lada", RANDOM, "distill+lada:filter=loss")]
    out = tmp_path / "cmp"
    jobs = plan(scenario, [*variants, oracle], [0, 1], [], out, 1)
    final = {"standalone": 0.45, "distill": 0.4, "distill+lada": 0.5, RANDOM: 0.3, "distill+lada:filter=loss": 0.35, ORACLE: 0.6}
    for job in jobs:
        own = final[job.variant.label]
        run = {t: {"server": (None, 0.8, 100), "client-0": (0.2, 0.1, 10), "client-1": (0.4, 0.1, 10)} for t in (0, 1)}
        run[2] = {"server": (None, 0.8, 100), "client-0": (own, 0.1, 10), "client-1": (own, 0.1, 10)}
        rows = rows_of(run)
        for r in rows:
            if r["participant"] == "server":
                r.update({"accuracy_by_domain/add": 0.1, "accuracy_by_domain/mul": 0.6})
        write_fake_run(job.dir, job.cfg, rows)
    assert (out / "distill+lada_filter-random" / "seed-1" / "done.json").exists()
    write_compare(out, jobs, scenario="tiny", scenario_path=scenario, seeds=[0, 1], overrides=[],
                  command_line="X", plot=False)
    data = json.loads((out / "compare.json").read_text())
    check = data["check"]
    assert check["line"] == "testbed check: FAIL (a failed; b, c, d passed)"
    assert check["conditions"]["b"]["mean_points"] == pytest.approx(30.0)
    assert check["conditions"]["d"]["per_seed"][0]["margin_points"] == pytest.approx(50.0)
    assert check["transfer"]["distill"] == "5 steps (batch 16)"  # read from the saved config.yaml
    assert list(data["lada_vs_host"]) == ["distill+lada", RANDOM, "distill+lada:filter=loss", ORACLE]
    gap = data["oracle_gap"]["distill+lada"]
    assert gap["gap_points"] == pytest.approx([30.0, 30.0])
    assert gap["recovered"]["distill+lada"]["mean"] == pytest.approx(2 / 3)
    assert gap["recovered"]["distill+lada:filter=loss"]["values"] == pytest.approx([1 / 6, 1 / 6])
    md = (out / "compare.md").read_text()
    assert md.index("testbed check: FAIL") < md.index("Regenerate") < md.index("| `standalone` | 2 |")
    assert "- (a) transfer helps: FAIL, `distill` − `standalone`, final client own (points): seed 0 -5.0, seed 1 -5.0" in md
    assert "- transfer phases: 5 steps (batch 16)" in md
    assert "Oracle gap recovered (`distill+lada`)" in md and "| `distill+lada` | 2 | 67 ± 0 | 67 | 67 |" in md


def test_own_share_summary_takes_the_lowest_cell_from_round_two_against_its_base_rate():
    def lada_rows(cells):  # {(client, round): (share, base)}
        return [{"round": t, "participant": c, "role": "client", "split": "local_test", "accuracy": 0.5, "n": 10,
                 "bytes_sent": 0, "bytes_received": 0, "lada/own_share": share, "lada/own_base_rate": base}
                for (c, t), (share, base) in cells.items()]

    seed0 = {("client-0", 1): (0.1, 0.3), ("client-0", 2): (0.4, 0.1), ("client-1", 2): (0.45, 0.3),
             ("client-1", 3): (0.6, 0.3)}
    rows = lada_rows(seed0)
    assert len(own_shares(rows + rows)) == 4  # one cell per (client, round), however many splits
    results = {"distill": {"runs": [{"seed": 0, "own_shares": []}]},
               "distill+lada": {"runs": [{"seed": 0, "own_shares": own_shares(rows)}]}}
    summary = own_share_summary(results)
    assert list(summary) == ["distill+lada"]  # no filter, no row
    (cell,) = summary["distill+lada"]
    assert cell["min_ratio"] == pytest.approx(1.5) and (cell["client"], cell["round"], cell["share"]) == ("client-1", 2, 0.45)
    assert (cell["reached"], cell["cells"]) == (2, 3)
    assert cell["of_possible"] is None  # runs from before `lada/own_possible` was logged

    possible = {("client-0", 2): 0.4, ("client-1", 2): 0.5, ("client-1", 3): 0.75}
    rows = [dict(r, **{"lada/own_possible": possible.get((r["participant"], r["round"]), 1.0)}) for r in rows]
    (cell,) = own_share_summary({"distill+lada": {"runs": [{"seed": 0, "own_shares": own_shares(rows)}]}})["distill+lada"]
    assert cell["of_possible"] == pytest.approx(0.8)  # client-1 round 3: 0.6 of 0.75 (round 2's 0.45 of 0.5 is 0.9)


def test_server_per_domain_tables_show_final_gain_and_paired_difference():
    def run(seed, add, mul, add0=0.9, mul0=0.4):
        return {"seed": seed, "client_own": 0.5, "client_global": 0.2, "server_global": (add + mul) / 2,
                "server_by_domain": {"add": add, "mul": mul}, "round0": {"server_by_domain": {"add": add0, "mul": mul0}}}

    results = {"fedmkt": {"runs": [run(0, 0.9, 0.5), run(1, 0.8, 0.4)], "missing": []},
               "fedmkt+lada": {"runs": [run(0, 0.9, 0.6), run(1, 0.9, 0.7)], "missing": []}}
    pairs = lada_vs_host(results)
    assert pairs["fedmkt+lada"]["server_by_domain"]["mul"]["diffs"] == pytest.approx([10.0, 30.0])
    assert pairs["fedmkt+lada"]["server_by_domain"]["mul"]["verdict"] == "higher"
    assert pairs["fedmkt+lada"]["server_by_domain"]["add"]["verdict"] == "mixed"  # 0 and +10
    (h1, b1), (h2, b2) = server_domain_grids(results, pairs)
    assert h1 == ["method", "n", "add % (gain)", "mul % (gain)"]
    assert b1[1] == ["fedmkt+lada", "2", "90.0 ± 0.0 (+0.0 ± 0.0)", "65.0 ± 7.1 (+25.0 ± 7.1)"]
    assert b2 == [["fedmkt+lada − fedmkt", "2", "+5.0 ± 7.1 (+0.0 / +10.0; mixed)", "+20.0 ± 14.1 (+10.0 / +30.0; higher)"]]


def test_a_scenario_with_more_rounds_extends_its_finished_runs_and_one_with_fewer_is_refused(tmp_path, tiny_config_dict):
    """A finished two-round run (RUN_A) under a three-round scenario is continued with --resume to the new
    count, not redone; under a one-round scenario it would be cut, so the plan refuses it by name."""
    scenario = tiny_yaml(tmp_path, tiny_config_dict)
    out = tmp_path / "cmp"
    [job] = plan(scenario, [cmp.Variant.method("distill")], [0], [], out, 1)
    write_fake_run(job.dir, job.cfg, rows_of(RUN_A))
    assert job.state() == "done"
    [longer] = plan(scenario, [cmp.Variant.method("distill")], [0], ["rounds=3"], out, 1)
    assert longer.state() == "partial"
    assert schedule.command(longer)[-4:] == ["--out", str(job.dir), "--resume", "--set=rounds=3"]
    with pytest.raises(ConfigError, match=r"holds a run of 2 rounds, more than rounds=1; pass another --out"):
        plan(scenario, [cmp.Variant.method("distill")], [0], ["rounds=1"], out, 1)
