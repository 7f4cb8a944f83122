"""Hostile configs, damaged checkpoints and wrong --data files: one line naming the key or file.

Config values of the wrong type are refused by one check driven by the dataclass field types
(:mod:`spikereg_neuro.dataclass_io`); checkpoints are checked for the records every command
reads; non-torch and non-dataset files say what they are not. Tiny inputs: runs in seconds.
"""
from __future__ import annotations

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch

from spikereg_neuro.checkpoint import read_checkpoint, save_checkpoint
from spikereg_neuro.cli import main
from spikereg_neuro.config import InferenceConfig, TrainConfig, load_config
from spikereg_neuro.data.dataset import DataConfig, dataset_info
from spikereg_neuro.io.safe_load import safe_torch_load
from spikereg_neuro.model.config import ModelConfig
from spikereg_neuro.model.unet import SpikeRegUNet
from spikereg_neuro.registration.world import model_spacing
from cli_errors import one_error_line as _one_error_line

TINY = dict(enc_channels=(4, 4, 8, 8), dec_channels=(8, 4, 4), enc_windows=(4, 3, 2, 2), dec_window=2)
SHAPE = (16, 16, 16)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny checkpoint, a fixed/moving pair, and files that are neither checkpoints nor data sets."""
    root = tmp_path_factory.mktemp("hostile_config")
    torch.manual_seed(0)
    net = SpikeRegUNet(ModelConfig(**TINY)).eval()
    paths = {"root": root, "ckpt": save_checkpoint(root / "tiny.pt", net, {"inference": {"patch_size": 16}})}
    rng = np.random.default_rng(0)
    for name in ("fixed", "moving"):
        paths[name] = root / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(rng.random(SHAPE).astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0])),
                 str(paths[name]))
    paths["random"] = root / "random.bin"
    paths["random"].write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    paths["h5"] = root / "other.h5"
    with h5py.File(paths["h5"], "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    return paths


# ============================================================================ configs
@pytest.mark.parametrize("text, msg", [
    ("data: {synth: 5}", "config section 'data.synth' must be a mapping, got 5 (int)"),
    ("data: {shape: 64}", "data.shape must be a list of 3 integers, got 64 (int)"),
    ("data: {shape: [a, b, c]}", "data.shape must be a list of 3 integers, got ['a', 'b', 'c']"),
    ("data: {shape: [8.7, 8, 8]}", "data.shape must be a list of 3 integers, got [8.7, 8, 8]"),
    ("data: {shape: [8, 8]}", "data.shape must be a list of 3 integers"),
    ("data: {voxel_size_mm: abc}", "data.voxel_size_mm must be a number, got 'abc' (str)"),
    ("data: {n_train: 2.5}", "data.n_train must be an integer, got 2.5 (float)"),
    ("data: {n_val: true}", "data.n_val must be an integer, got True (bool)"),
    ("data: {seed: -1}", "data.seed must be >= 0"),
    ("data: {synth: {integration_steps: 2.5}}", "data.synth.integration_steps must be an integer"),
    ("model: {enc_channels: 8}", "model.enc_channels must be a list of integers, got 8 (int)"),
    ("model: {neuron: 3}", "config section 'model.neuron' must be a mapping, got 3 (int)"),
    ("model: {neuron: {threshold: high}}", "model.neuron.threshold must be a number, got 'high'"),
    ("train: fast", "config section 'train' must be a mapping, got 'fast' (str)"),
    ("train: [1, 2]", "config section 'train' must be a mapping, got [1, 2] (list)"),
    ("train: {rate_band: [0.1]}", "train.rate_band must be a list of 2 numbers"),
    ("augment: {velocity: [3]}", "augment.velocity must be a list of lists of numbers, got [3]"),
    ("inference: {symmetric: 1}", "inference.symmetric must be true or false, got 1 (int)"),
])
def test_mistyped_config_values_name_their_key(tmp_path, text, msg):
    p = tmp_path / "bad.yaml"
    p.write_text(text + "\n")
    with pytest.raises(ValueError) as ei:
        load_config(p)
    assert str(ei.value).startswith(f"{p}: ") and msg in str(ei.value) and "\n" not in str(ei.value)


def test_a_binary_config_file_is_named(tmp_path):
    p = tmp_path / "binary.yaml"
    p.write_bytes(b"\xff\xfe\x00data: {}")
    with pytest.raises(ValueError, match="is not a text \\(UTF-8\\) YAML file") as ei:
        load_config(p)
    assert str(p) in str(ei.value)


def test_direct_construction_is_checked_like_a_yaml_section():
    with pytest.raises(ValueError, match="config section 'data.synth' must be a mapping"):
        DataConfig(synth=5)
    with pytest.raises(ValueError, match="data.shape must be a list of 3 integers"):
        DataConfig(shape=64)
    with pytest.raises(ValueError, match="train.epochs must be an integer, got True"):
        TrainConfig(epochs=True)
    # numpy scalars are numbers; a mapping of synth settings is still read
    dc = DataConfig(shape=(np.int64(16), 16, 16), voxel_size_mm=np.float32(8.0), synth={"noise_std": 0.0})
    assert dc.shape == (16, 16, 16) and dc.synth.noise_std == 0.0


@pytest.mark.parametrize("text, msg", [
    ("data: {synth: 5}", "config section 'data.synth' must be a mapping"),
    ("train: fast", "config section 'train' must be a mapping"),
    ("data: {n_train: 2.5}", "data.n_train must be an integer"),
])
def test_train_refuses_a_mistyped_config_before_any_work(tmp_path, capsys, text, msg):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text + "\n")
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 1
    line = _one_error_line(capsys.readouterr().err, "train")
    assert msg in line and str(cfg) in line
    assert not (tmp_path / "run").exists()


def test_train_names_a_binary_config(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes(bytes(range(256)))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 1
    assert f"{cfg} is not a text (UTF-8) YAML file" in _one_error_line(capsys.readouterr().err, "train")


# ============================================================================ checkpoints
def _damaged(files, tmp_path, name, edit):
    ck = torch.load(files["ckpt"], weights_only=True)
    edit(ck)
    torch.save(ck, tmp_path / name)
    return tmp_path / name


DAMAGES = [
    ("nocfg.pt", lambda ck: ck.pop("model_config"), "the checkpoint has no 'model_config'"),
    ("nostate.pt", lambda ck: (ck.pop("state_dict"), ck.pop("weights_sha256")), "the checkpoint has no 'state_dict'"),
    ("cfgstr.pt", lambda ck: ck.update(model_config="hello"), "the checkpoint's 'model_config' must be a mapping, got str"),
    ("cfgtype.pt", lambda ck: ck["model_config"].update(enc_channels="abc"),
     "the checkpoint's model_config is invalid: enc_channels must be a list of integers, got 'abc'"),
    ("infstr.pt", lambda ck: ck.update(inference="nope"), "the checkpoint's 'inference' must be a mapping, got str"),
    ("infval.pt", lambda ck: ck.update(inference={"patch_size": "big"}),
     "the checkpoint's inference is invalid: inference.patch_size must be an integer, got 'big'"),
    ("configstr.pt", lambda ck: ck.update(config="nope"), "the checkpoint's 'config' must be a mapping, got str"),
]


@pytest.mark.parametrize("name, edit, msg", DAMAGES)
def test_damaged_checkpoints_name_the_file_and_key(files, tmp_path, name, edit, msg):
    path = _damaged(files, tmp_path, name, edit)
    with pytest.raises(ValueError) as ei:
        read_checkpoint(path)
    assert str(ei.value).startswith(f"{path}: {msg}") and "\n" not in str(ei.value), ei.value


@pytest.mark.parametrize("cmd", ["register", "calibrate", "loihi export", "train"])
def test_commands_given_a_damaged_checkpoint_print_one_line(files, tmp_path, capsys, cmd):
    for name, edit, msg in DAMAGES[:3]:
        path = _damaged(files, tmp_path, name, edit)
        out = tmp_path / ("w.nii.gz" if cmd == "register" else "out.h5")
        argv = {"register": ["register", str(files["fixed"]), str(files["moving"]), "--out-warped", str(out),
                             "--model", str(path)],
                "calibrate": ["calibrate", "--model", str(path), "--out", str(out)],
                "loihi export": ["loihi", "export", "--net", str(path), "--out", str(out)],
                "train": ["train", "--init", str(path), "--out", str(tmp_path / "run")]}[cmd]
        assert main(argv) == 1
        assert f"{path}: {msg}" in _one_error_line(capsys.readouterr().err, cmd)
        assert not out.exists() and not (tmp_path / "run" / "last.pt").exists()


def test_a_checkpoint_spacing_that_is_no_number_names_its_key(files, tmp_path):
    path = _damaged(files, tmp_path, "vox.pt", lambda ck: ck.update(config={"data": {"voxel_size_mm": "x"}}))
    with pytest.raises(ValueError, match=r"vox.pt: the checkpoint's voxel size is invalid: the checkpoint's config "
                                         r"\(data section\): voxel_size_mm 'x' is not a positive size in mm"):
        read_checkpoint(path)
    path = _damaged(files, tmp_path, "dc.pt", lambda ck: ck.update(data_config={"voxel_size_mm": "x"}))
    with pytest.raises(ValueError, match=r"dc.pt: the checkpoint's data_config is invalid: voxel_size_mm must be"):
        read_checkpoint(path)
    for bad in ("2.5", True, [2.5, "x", 2.5], {"a": 1}):
        with pytest.raises(ValueError, match="is not a positive size in mm"):
            model_spacing({"data_config": {"voxel_size_mm": bad}})
    assert model_spacing({"data_config": {"voxel_size_mm": [2, 2.0, 2]}})[0] == 2.0


def test_an_inference_record_that_is_not_a_mapping_is_named():
    with pytest.raises(ValueError, match="config section 'inference' must be a mapping, got 'nope' \\(str\\)"):
        InferenceConfig.from_checkpoint({"inference": "nope"})
    assert InferenceConfig.from_checkpoint({"inference": None}) == InferenceConfig()


@pytest.mark.parametrize("kind", ["random", "h5", "fixed"])
def test_a_file_that_is_no_torch_checkpoint_gets_no_unsafe_advice(files, kind):
    with pytest.raises(ValueError) as ei:
        safe_torch_load(files[kind], "checkpoint")
    msg = str(ei.value)
    assert msg.startswith(f"{files[kind]} is not a readable torch checkpoint (not a PyTorch file")
    assert "weights_only" not in msg and "Re-running" not in msg and "\n" not in msg


def test_register_with_a_random_model_file_is_one_line_without_unsafe_advice(files, tmp_path, capsys):
    argv = ["register", str(files["fixed"]), str(files["moving"]), "--out-warped", str(tmp_path / "w.nii.gz"),
            "--model", str(files["random"])]
    assert main(argv) == 1
    line = _one_error_line(capsys.readouterr().err, "register")
    assert f"{files['random']} is not a readable torch checkpoint" in line and "weights_only" not in line


# ============================================================================ --data files
@pytest.mark.parametrize("kind, msg", [("fixed", "is not an HDF5 file, so not a spikereg-neuro dataset"),
                                       ("random", "is not an HDF5 file, so not a spikereg-neuro dataset"),
                                       ("h5", "is an HDF5 file but not a spikereg-neuro dataset")])
def test_dataset_info_names_a_file_that_is_no_dataset(files, kind, msg):
    with pytest.raises(ValueError) as ei:
        dataset_info(files[kind])
    assert str(ei.value).startswith(f"{files[kind]} {msg}") and "\n" not in str(ei.value)


def test_calibrate_with_a_nifti_as_data_is_one_line(files, tmp_path, capsys):
    out = tmp_path / "net.h5"
    assert main(["calibrate", "--model", str(files["ckpt"]), "--data", str(files["fixed"]), "--out", str(out)]) == 1
    line = _one_error_line(capsys.readouterr().err, "calibrate")
    assert f"{files['fixed']} is not an HDF5 file" in line
    assert not out.exists()
