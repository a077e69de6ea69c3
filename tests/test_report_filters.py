"""The report's Filters section: own-domain picks against the pool, and reward against own-test gain."""

import math

import pytest

from fedlada import report


def sel(client, t, reward, own=None, direction="down"):
    row = {"round": t, "client": client, "direction": direction, "sample_id": f"{client}-{t}-{reward}", "domain": "add",
           "features": [0.5, 0.0, 0.0, math.log1p(40)], "reward": reward, "teacher_correct": True, "learner_correct": False}
    if own is not None:
        row["own_domain"] = own
    return row


def metrics(own_by_round, extras=None):
    """Client rows from {client: [own accuracy per round 0..R]}; `extras`: {(client, round): {key: value}}."""
    rows = []
    for c, accs in own_by_round.items():
        for t, acc in enumerate(accs):
            for split in ("local_test", "global_test"):
                rows.append({"round": t, "participant": c, "role": "client", "split": split, "accuracy": acc, "n": 10,
                             **(extras or {}).get((c, t), {})})
    rows += [{"round": t, "participant": "server", "role": "server", "split": "global_test", "accuracy": 0.5, "n": 10,
              "lada/reward_up": 9.0} for t in range(3)]
    return rows


def test_rank_correlation_known_values():
    assert report.rank_correlation([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert report.rank_correlation([1, 2, 3, 4], [9, 7, 3, 1]) == pytest.approx(-1.0)
    assert report.rank_correlation([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)  # 1 - 6 * 2 / (3 * 8)
    assert report.rank_correlation([1, 2], [1, 2]) is None  # two points are always ranked perfectly
    assert report.rank_correlation([1, 2, 3], [5, 5, 5]) is None  # nothing to rank
    assert report.rank_correlation([1, None, 2, 3, float("nan")], [1, 5, 2, 3, 4]) == pytest.approx(1.0)


def test_rank_correlation_without_scipy_matches_it_with_ties():
    xs, ys = [1, 2, 2, 3, 5, 4], [3, 1, 2, 2, 6, 5]
    assert report.average_ranks([5, 1, 5, 3]) == [3.5, 1.0, 3.5, 2.0]
    scipy = pytest.importorskip("scipy.stats")
    assert report._spearman(xs, ys) == pytest.approx(scipy.spearmanr(xs, ys)[0])
    assert report._spearman([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)


def test_own_domain_rounds_from_metrics_extras_and_selections():
    selections = [sel("client-0", 1, 0.1, True), sel("client-0", 1, 0.3, False),
                  sel("client-0", 2, 0.5, True), sel("client-0", 2, 0.7, True),
                  sel("client-1", 1, 0.2), sel("client-1", 1, 0.4, True),  # one pick without the flag: share unknown
                  sel("client-0", 1, 5.0, direction="up")]  # the up direction is not the learner's picks
    extras = {("client-1", 1): {"lada/own_share": 0.75, "lada/own_base_rate": 0.25, "lada/reward": 0.33}}
    rows = metrics({"client-0": [0.2, 0.3, 0.25], "client-1": [0.5, 0.6]}, extras)
    per = report.own_domain_rounds(selections, rows)
    assert [(r["client"], r["round"], r["picks"]) for r in per] == [("client-0", 1, 2), ("client-0", 2, 2), ("client-1", 1, 2)]
    c0r1, c0r2, c1r1 = per
    assert c0r1["own_share"] == pytest.approx(0.5) and c0r1["own_base_rate"] is None and c0r1["reward"] == pytest.approx(0.2)
    assert c0r1["gain_points"] == pytest.approx(10.0) and c0r2["gain_points"] == pytest.approx(-5.0)
    assert c0r2["own_share"] == pytest.approx(1.0) and c0r2["reward"] == pytest.approx(0.6)
    # the metrics' extras win over what the selections would give
    assert (c1r1["own_share"], c1r1["own_base_rate"], c1r1["reward"]) == (0.75, 0.25, 0.33)
    assert c1r1["gain_points"] == pytest.approx(10.0)


def test_old_runs_without_own_domain_flags_show_unknowns():
    per = report.own_domain_rounds([sel("client-0", 1, 0.1), sel("client-0", 1, 0.3)], metrics({"client-0": [0.2, 0.4]}))
    assert per[0]["own_share"] is None and per[0]["own_base_rate"] is None and per[0]["reward"] == pytest.approx(0.2)
    lines = report.filter_section([sel("client-0", 1, 0.1), sel("client-0", 1, 0.3)], metrics({"client-0": [0.2, 0.4]}))
    assert "| client-0 | 1 | 2 | – | – | – | 0.200 | +20.0 |" in "\n".join(lines)
    # without metrics rows: the picks from selections.jsonl, no gains and so no correlation
    alone = "\n".join(report.filter_section([sel("client-0", 1, 0.1, True)]))
    assert "| client-0 | 1 | 1 | 100 | – | – | 0.100 | – |" in alone and "Spearman" not in alone


def monotone_run(gains_sign: int):
    """client-0: rewards 0.1..0.4 over rounds 1..4, gains rising with them (or falling, gains_sign=-1);
    client-1: three rounds whose gains fall as rewards rise."""
    selections, extras = [], {}
    for t, reward in enumerate([0.1, 0.2, 0.3, 0.4], start=1):
        selections.append(sel("client-0", t, reward, t % 2 == 0))
        extras[("client-0", t)] = {"lada/own_share": 0.1 * t, "lada/own_base_rate": 0.2, "lada/own_possible": 0.5,
                                   "lada/reward": reward}
    for t, reward in enumerate([0.5, 0.6, 0.7], start=1):
        selections.append(sel("client-1", t, reward))
        extras[("client-1", t)] = {"lada/reward": reward}
    own0 = [0.1]
    for g in [0.01, 0.02, 0.04, 0.08]:
        own0.append(own0[-1] + gains_sign * g)
    own1 = [0.5, 0.6, 0.65, 0.68]  # gains 10, 5, 3: falling
    return selections, metrics({"client-0": own0, "client-1": own1}, extras)


def test_filter_section_table_and_reward_gain_correlations():
    selections, rows = monotone_run(+1)
    per = report.own_domain_rounds(selections, rows)
    rho = report.reward_gain_correlations(per)
    assert rho["client-0"] == pytest.approx(1.0) and rho["client-1"] == pytest.approx(-1.0)
    # pooled over the 7 (client, round) pairs: rewards 0.1..0.7 against gains 1, 2, 4, 8, 10, 5, 3 points,
    # rank differences 0, 0, -1, -2, -2, 1, 4: rho = 1 - 6 * 26 / (7 * 48)
    assert rho["all"] == pytest.approx(1 - 6 * 26 / (7 * 48))
    assert report.reward_gain_correlations(report.own_domain_rounds(*monotone_run(-1)))["client-0"] == pytest.approx(-1.0)

    lines = report.filter_section(selections, rows)
    text = "\n".join(lines)
    assert lines[0] == "## Filters" and "| 1 | 0.100 | 0.500 |" in text  # what the section showed before stays
    assert ("| client | round | picks | own-domain picks % | own-domain in pool % | possible % | mean reward | "
            "own-test gain (points) |") in text
    assert "| client-0 | 3 | 1 | 30 | 20 | 50 | 0.300 | +4.0 |" in text
    assert "| client-1 | 1 | 1 | – | – | – | 0.500 | +10.0 |" in text
    assert "| client-0 | 4 | +1.00 |" in text and "| client-1 | 3 | -1.00 |" in text
    assert "| all (client, round) pairs | 7 | +0.54 |" in text


def test_write_report_passes_the_metrics_to_the_filter_section(tmp_path):
    import json

    selections, rows = monotone_run(+1)
    for r in rows:
        r.setdefault("bytes_sent", 0)
        r.setdefault("bytes_received", 0)
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "selections.jsonl").write_text("".join(json.dumps(s) + "\n" for s in selections))
    text = report.write_report(tmp_path, plot=False).read_text()
    assert "| all (client, round) pairs | 7 | +0.54 |" in text


def test_rank_correlation_falls_back_to_average_ranks_without_scipy(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "scipy.stats", None)  # import fails as if scipy were not installed
    monkeypatch.setattr(report, "_spearman", lambda xs, ys: ("fallback", xs, ys))
    assert report.rank_correlation([1, 2, None, 3], [3, 2, 1, 1]) == ("fallback", [1, 2, 3], [3, 2, 1])


def test_report_shows_the_servers_accuracy_per_domain_and_round(tmp_path):
    import json

    rows = [{"round": t, "participant": "server", "role": "server", "split": "global_test", "accuracy": acc,
             "bytes_sent": 0, "bytes_received": 0, "accuracy_by_domain/add": add, "accuracy_by_domain/mul": mul}
            for t, acc, add, mul in ((0, 0.7, 0.9, 0.5), (1, 0.74, 0.88, 0.6))]
    assert report.server_domain_grid(rows) == (["round", "add", "mul"], [["0", "90.0", "50.0"], ["1", "88.0", "60.0"]])
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = report.write_report(tmp_path, plot=False).read_text()
    assert "| round | add | mul |" in text and "| 1 | 88.0 | 60.0 |" in text
    plain = [{k: v for k, v in r.items() if not k.startswith("accuracy_by_domain/")} for r in rows]
    assert report.server_domain_grid(plain) is None  # runs without per-domain numbers get no table
