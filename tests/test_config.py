import pytest

from fedlada.config import ConfigError, apply_override, config_from_dict, dump_config, load_config
from fedlada.methods import check


def test_quickstart_loads_and_overrides_apply():
    cfg = load_config(None, ["method=standalone", "rounds=5", "clients.1.base.steps=7", "round.transfer.lr=0.01"])
    assert cfg.method == "standalone" and cfg.rounds == 5
    assert cfg.clients[1].base.steps == 7 and cfg.round.transfer.lr == 0.01
    assert cfg.name == "quickstart" and len(cfg.clients) == 3


def test_dump_reloads_to_the_same_config(tiny_config_dict):
    import yaml

    cfg = config_from_dict(tiny_config_dict)
    assert config_from_dict(yaml.safe_load(dump_config(cfg))) == cfg


@pytest.mark.parametrize(
    "override, expected",
    [
        ("rounds=-1", "rounds: Input should be greater than or equal to 0"),
        ("roundz=2", "roundz: unknown key"),
        ("method=nope", "method: unknown 'nope'"),
        ("round.local.steps=abc", "round.local.steps: Input should be a valid integer"),
        ("data.source=gsm8k", "data.source=gsm8k"),
    ],
)
def test_bad_keys_and_values_give_one_line_naming_the_key(override, expected):
    with pytest.raises(ConfigError) as info:
        check(load_config(None, [override]))  # the schema's checks, then the method's
    message = str(info.value)
    assert expected in message and "\n" not in message


def test_override_syntax_errors():
    with pytest.raises(ConfigError, match="key=value"):
        apply_override({}, "rounds")
    with pytest.raises(ConfigError, match="not an index"):
        apply_override({"clients": [{}]}, "clients.3.model=x")


def test_unknown_config_name():
    with pytest.raises(ConfigError, match="no such file or packaged config"):
        load_config("does-not-exist")


def test_lada_lambda_is_settable_by_its_paper_name_and_saved_under_it():
    cfg = load_config(None, ["method=distill+lada", "lada.lambda=0.5", "lada.filter=random"])
    assert cfg.lada.lambda_ == 0.5 and cfg.lada.filter == "random"
    assert "lambda: 0.5" in dump_config(cfg)


def test_the_quickstart_is_the_standard_testbed_under_its_own_name():
    """README and docs/quickstart.md report the quickstart's testbed check as standard's config: they must not drift."""
    quick, standard = load_config("quickstart", []), load_config("scenarios/standard", [])
    assert quick.name == "quickstart" and standard.name == "standard"
    assert quick.model_copy(update={"name": "standard"}) == standard
