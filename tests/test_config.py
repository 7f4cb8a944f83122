"""Configs: a partial YAML overlays the packaged default.yaml (one source of defaults)."""
import pytest
import yaml

from dataclasses import replace

from spikereg_neuro.checkpoint import DEFAULT_MODEL, read_checkpoint
from spikereg_neuro.config import DEFAULT_CONFIG, Config, load_config, overlay
from spikereg_neuro.model.config import ModelConfig


def test_the_dataclass_defaults_are_the_packaged_yaml():
    """One source of defaults: ``Config()`` is the packaged default.yaml, key for key."""
    assert Config().to_dict() == load_config().to_dict()
    expected = Config().to_dict()

    def same(yaml_part, ref, where):
        for k, v in yaml_part.items():
            if isinstance(v, dict):
                same(v, ref[k], f"{where}{k}.")
            else:
                assert ref[k] == v, f"{where}{k}: dataclass {ref[k]!r}, default.yaml {v!r}"

    same(yaml.safe_load(DEFAULT_CONFIG.read_text()), expected, "")


def test_a_one_key_yaml_builds_the_shipped_model(tmp_path):
    """The shipped model is the packaged config with the input sent once: one key."""
    p = tmp_path / "once.yaml"
    p.write_text("model:\n  input_once: true\n")
    cfg = load_config(p).model
    assert cfg == replace(ModelConfig(), input_once=True)
    stored = read_checkpoint(DEFAULT_MODEL)["model_config"]
    assert cfg == ModelConfig.from_stored(stored)  # keys added since (quantize_weights) at their defaults
    def known(d, ref):   # the keys the stored config names (newer ones, nested too, left out)
        return {k: known(v, ref[k]) if isinstance(v, dict) else v for k, v in d.items() if k in ref}
    assert known(cfg.to_dict(), stored) == stored


def test_a_stored_model_config_without_newer_keys_keeps_their_old_meaning():
    """Checkpoints written before the defaults moved: an absent key means the value it had."""
    old = ModelConfig.from_stored({"scales": [2, 1], "neuron": {"threshold": 4.0}})
    assert (old.readout_scale, old.weight_gain, old.readout_levels, old.neuron.graded_spike) == (0.5, 8.0, 1, False)
    full = ModelConfig().to_dict()
    assert ModelConfig.from_stored(full) == ModelConfig()


def test_a_partial_config_changes_only_its_keys(tmp_path):
    packaged = load_config()
    p = tmp_path / "part.yaml"
    p.write_text(yaml.safe_dump({"train": {"lr": 0.001}, "model": {"neuron": {"threshold": 2.0}}}))
    cfg = load_config(p)
    assert cfg.train.lr == 0.001 and cfg.model.neuron.threshold == 2.0
    # every other key is the packaged value, not the dataclass default
    assert cfg.model.neuron.graded_spike == packaged.model.neuron.graded_spike is True
    assert cfg.model.readout_levels == packaged.model.readout_levels == 2
    assert cfg.train.w_rate == packaged.train.w_rate and cfg.train.rate_band == packaged.train.rate_band
    assert cfg.data.to_dict() == packaged.data.to_dict()
    assert cfg.inference == packaged.inference
    assert load_config(DEFAULT_CONFIG).to_dict() == packaged.to_dict()


def test_overlay_merges_mappings_and_replaces_lists():
    base = {"model": {"scales": [2, 1], "neuron": {"a": 1, "b": 2}}, "train": {"x": 1}}
    assert overlay(base, {"model": {"scales": [1], "neuron": {"b": 3}}}) == {
        "model": {"scales": [1], "neuron": {"a": 1, "b": 3}}, "train": {"x": 1}}
    assert base["model"]["neuron"] == {"a": 1, "b": 2}       # the base is not changed


@pytest.mark.parametrize("text, msg", [
    ("train: {lr: fast}", "train.lr must be a number"),
    ("model: {bogus: 1}", "unknown model config keys"),
    ("- 1\n- 2", "top level must be a mapping"),
    ("train: [", "is not valid YAML"),
    ("model: {enc_channels: [8, 16, 32, 32, 32]}", r"enc_windows needs one entry per encoder level \(5\)"),
    ("model: {enc_channels: [8, 16, 32, 32, 32], enc_windows: [8, 6, 4, 4, 4]}",
     r"dec_channels needs 4 entries \(decoder levels 3 down to 0\) for 5 encoder levels"),
    ("model: {enc_channels: [8, 16], enc_windows: [8, 6], dec_channels: [8]}", "enc_channels needs 3 to 6 entries"),
])
def test_bad_partial_configs_name_the_problem(tmp_path, text, msg):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ValueError, match=msg):
        load_config(p)


@pytest.mark.parametrize("argv", [["train", "-q"], ["-q", "train"], ["train", "--no-progress"],
                                  ["simulate", "--quiet", "--net", "x"], ["data", "build", "-q"],
                                  ["benchmark", "accuracy", "--out", "o", "--quiet"],
                                  ["benchmark", "--out", "o", "-q"], ["loihi", "map", "--net", "n", "--out", "o", "-q"]])
def test_one_quiet_flag_on_every_command(argv):
    from spikereg_neuro.cli import _unify_quiet, build_parser
    args = build_parser().parse_args(argv)
    _unify_quiet(args)
    assert args.quiet and args.no_progress


def test_verbose_before_or_after_the_command():
    from spikereg_neuro.cli import build_parser
    p = build_parser()
    assert p.parse_args(["-v", "train"]).verbose and p.parse_args(["train", "-v"]).verbose
    assert not p.parse_args(["train"]).verbose


def test_a_yaml_number_without_a_dot_is_a_number(tmp_path):
    """PyYAML reads ``1e-3`` as a string (YAML 1.1); the config loader reads it as YAML 1.2 does."""
    from spikereg_neuro.config import load_config
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lr: 1e-3\n  grad_clip: 5E+0\n  rate_band: [1e-2, 2.5e-1]\n")
    cfg = load_config(p)
    assert cfg.train.lr == 1e-3 and cfg.train.grad_clip == 5.0 and cfg.train.rate_band == (0.01, 0.25)
