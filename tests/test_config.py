"""Config: defaults <- YAML <- dotted overrides, and one clear error per bad input."""

from pathlib import Path

import pytest

from silmm.config import Config, config_diff, config_to_dict, load_config, parse_overrides

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_are_the_documented_ones():
    cfg = Config()
    assert (cfg.sampling.n, cfg.sampling.top_p, cfg.dpo.beta, cfg.dpo.gamma) == (8, 0.95, 0.1, 1.0)
    assert (cfg.pairs.per_prompt, cfg.pairs.min_gap, cfg.run.iterations) == (1, 0.1, 3)
    assert (cfg.dpo.kernel_pool, cfg.dpo.kernel_distance, cfg.questions.mode) == ("avg", "cosine", "self")
    assert cfg.questions.whole_template == 'does the image show "{prompt}"?'


def test_yaml_then_overrides_take_precedence(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "dpo:\n  beta: 0.3\n  gamma: 2\ntrain:\n  lr: 3e-5\nlora:\n  target_modules: '.*q_proj'\n"
    )
    cfg = load_config(path, ["dpo.beta=0.2", "sampling.n=4", "prompts.categories=[color, shape]"])
    assert cfg.dpo.beta == 0.2  # override beats file
    assert cfg.dpo.gamma == 2.0 and isinstance(cfg.dpo.gamma, float)  # int accepted as float
    assert cfg.train.lr == 3e-5  # YAML 1.1 reads "3e-5" as a string: accepted as float
    assert cfg.sampling.n == 4
    assert cfg.prompts.categories == ("color", "shape")
    assert cfg.lora.target_modules == ".*q_proj"  # a string is one regex, a list is module names


@pytest.mark.parametrize(
    "override,match",
    [
        ("sampling.n=1", r"sampling.n=1 .*N must be >= 2"),
        ("dpo.beta=0", r"dpo.beta=0.0 .*beta must be > 0"),
        ("dpo.beta=-1", r"dpo.beta=-1.0 .*beta must be > 0"),
        ("dpo.gamma=0", r"dpo.gamma=0.0"),
        ("sampling.dropout=-0.1", r"sampling.dropout=-0.1 .*\[0, 1\)"),
        ("lora.dropout=-0.1", r"lora.dropout=-0.1"),
        ("sampling.top_p=0", r"sampling.top_p=0.0 .*\(0, 1\]"),
        ("sampling.top_p=1.5", r"sampling.top_p=1.5 .*\(0, 1\]"),
        ("sampling.mode=beam", r"sampling.mode='beam' .*\['nucleus', 'dropdiv', 'noise', 'none'\]"),
        ("sampling.feature_target=raw", r"sampling.feature_target='raw' .*\['sampled', 'decoded'\]"),
        ("questions.mode=nouns", r"questions.mode='nouns' .*\['self', 'whole', 'gt'\]"),
        ("feedback.rule=vote", r"feedback.rule='vote' .*\['prob_diff', 'yes_ratio', 'random'\]"),
        ("dpo.kernel_pool=sum", r"dpo.kernel_pool='sum' .*\['avg', 'max', 'none'\]"),
        ("run.log_with=mlflow", r"run.log_with='mlflow' .*\['none', 'tensorboard', 'wandb'\]"),
        ("run.heldout_images=0", r"run.heldout_images=0 .*must be >= 1"),
        ("dpo.betta=0.1", r"unknown config key 'dpo.betta'; valid keys here: \['dpo.beta'"),
        ("optim.lr=0.1", r"unknown config key 'optim'; valid keys here: \[.*'dpo'"),
        ("sampling.n=eight", r"sampling.n='eight' .*must be of type int"),
        ("feedback.renormalize=maybe", r"feedback.renormalize='maybe' .*true or false"),
        ("pairs.min_gap=3", r"pairs.min_gap=3.0"),
        ("pairs.replay=-1", r"pairs.replay=-1 .*must be >= 0"),
        ("questions.whole_template=hello", r"must contain '\{prompt\}'"),
        ("prompts.file_mode=replace", r"'replace' needs prompts.file"),
        ("train.reference=frozen_copy", r"\['cached', 'adapter_off'\]"),
    ],
)
def test_bad_values_name_the_field_and_valid_options(override, match):
    with pytest.raises(ValueError, match=match):
        load_config(None, [override])


def test_malformed_override_and_bad_file():
    with pytest.raises(ValueError, match="section.key=value"):
        parse_overrides(["beta"])
    with pytest.raises(ValueError, match="must be a mapping"):
        load_config(None, ["dpo=3"])


@pytest.mark.parametrize("name", ["world-discrete.yaml", "world-continuous.yaml"])
def test_shipped_configs_load_and_open_with_command_time_result(name):
    path = ROOT / "configs" / name
    cfg = load_config(path)
    head = path.read_text().splitlines()[:6]
    assert any(line.startswith("# Command:") for line in head)
    assert any(line.startswith("# Time:") for line in head)
    assert any(line.startswith("# Result:") for line in head)
    assert cfg.model.name == name.removesuffix(".yaml")


def test_round_trip_through_dict_and_diff(tmp_path):
    import yaml

    cfg = load_config(None, ["dpo.beta=0.25", "prompts.categories=[color]"])
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    assert load_config(path) == cfg
    assert config_diff(cfg, load_config(path, ["sampling.n=3", "dpo.beta=0.1"])) == ["sampling.n", "dpo.beta"]
