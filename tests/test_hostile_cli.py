"""Bad arguments of ``benchmark`` and ``calibrate`` fail up front: exit 1, one line
``spikereg-neuro CMD: error: ...`` naming the problem, no traceback, and nothing written to
``--out`` (no fast-calibration ``net.h5``). Every case fails before any pair is registered or
any network calibrated (a tiny untrained model, 24^3 pairs): the module runs in seconds."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from spikereg_neuro.checkpoint import save_checkpoint
from spikereg_neuro.cli import main
from spikereg_neuro.model.config import ModelConfig
from spikereg_neuro.model.unet import SpikeRegUNet
from cli_errors import one_error_line as _one_error_line

TINY = dict(enc_channels=(4, 4, 8, 8), dec_channels=(8, 4, 4), enc_windows=(4, 3, 2, 2), dec_window=2)
SHAPE = (24, 24, 24)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny SpikeReg checkpoint (size multiple 8, 2.5 mm), a pairs.json folder of one 24^3
    pair with labels, and files that are not what their flags expect."""
    root = tmp_path_factory.mktemp("hostile_cli")
    torch.manual_seed(0)
    net = SpikeRegUNet(ModelConfig(**TINY)).eval()
    ckpt = save_checkpoint(root / "tiny.pt", net, {"inference": {"patch_size": 16, "stride": 16, "batch_size": 2}})
    rng = np.random.default_rng(0)
    data = root / "pairs"
    data.mkdir()
    aff = np.diag([2.5, 2.5, 2.5, 1.0])
    for name in ("f", "m"):
        nib.save(nib.Nifti1Image(rng.random(SHAPE).astype(np.float32), aff), str(data / f"{name}.nii.gz"))
        nib.save(nib.Nifti1Image(rng.integers(0, 3, SHAPE).astype(np.int16), aff), str(data / f"{name}l.nii.gz"))
    (data / "pairs.json").write_text(json.dumps({
        "format": "spikereg-neuro-pairs", "version": 1, "voxel_size_mm": 2.5,
        "pairs": [{"name": "a", "fixed": "f.nii.gz", "moving": "m.nii.gz",
                   "fixed_labels": "fl.nii.gz", "moving_labels": "ml.nii.gz"}]}))
    (root / "bad.json").write_text("{not json")
    (root / "other.json").write_text(json.dumps({"backend": "emulator", "mode": "full registration", "seconds": 1}))
    (root / "rand.pt").write_bytes(rng.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return {"root": root, "ckpt": ckpt, "data": data, "nii": data / "f.nii.gz"}


def _bench(files, out, *extra):
    return ["-q", "benchmark", "--out", str(out), "--spikereg-model", str(files["ckpt"]), "--pairs", "1",
            "--no-ants", *extra]


@pytest.mark.parametrize("extra, expect", [
    (["--threads", "-3"], "--threads must be >= 1, got -3"),
    (["--threads", "0"], "--threads must be >= 1, got 0"),
    (["--lava-timeout", "-1"], "--lava-timeout must be > 0"),
    (["--lava-timeout", "0"], "--lava-timeout must be > 0"),
    (["--lava-patch", "0", "0", "0"], "--lava-patch [0, 0, 0] must be positive multiples of 8"),
    (["--lava-patch", "7", "7", "7"], "--lava-patch [7, 7, 7] must be positive multiples of 8"),
    (["--lava-run", "{root}/bad.json"], "--lava-run {root}/bad.json is not a readable JSON file"),
    (["--lava-run", "{nii}"], "--lava-run {nii} is not a readable JSON file"),
    (["--lava-run", "{root}/other.json"], "is not the run.json of `simulate --full --backend lava`"),
    (["--lava-run", "{root}/nope.json"], "--lava-run {root}/nope.json: no such file"),
    (["--ants-iterations", "a,b"], "--ants-iterations must be integers separated by commas, got 'a,b'"),
    (["--voxelmorph-model", "{root}/rand.pt"], "{root}/rand.pt is not a readable torch VoxelMorph checkpoint"),
    (["--voxelmorph-model", "{ckpt}"], "is not a spikereg-neuro VoxelMorph checkpoint"),
    (["--voxelmorph-model", "{root}/nope.pt"], "--voxelmorph-model {root}/nope.pt: no such file"),
    (["--spikereg-model", "{root}/rand.pt"], "{root}/rand.pt is not a readable torch checkpoint"),
    (["--spikereg-model", "{root}/nope.pt"], "--spikereg-model {root}/nope.pt: no such file"),
    (["--data", "{data}", "--lava-patch", "32", "32", "32"], "--lava-patch [32, 32, 32] larger than the volume"),
])
def test_benchmark_rejects_bad_arguments_before_any_work(files, tmp_path, capsys, extra, expect):
    out = tmp_path / "b"
    argv = _bench(files, out, *[x.format(**files) for x in extra])
    if "--ants-iterations" in extra:
        argv.remove("--no-ants")   # ANTs runs: its iterations are parsed (before the calibration)
    assert main(argv) == 1
    line = _one_error_line(capsys.readouterr().err, "benchmark")
    assert expect.format(**files) in line
    assert not out.exists()   # not even the directory: nothing half-written, no net.h5


def test_benchmark_accuracy_and_train_voxelmorph_reject_bad_threads(tmp_path, capsys):
    assert main(["-q", "benchmark", "accuracy", "--out", str(tmp_path / "a"), "--threads", "-2"]) == 1
    assert "--threads must be >= 1, got -2" in _one_error_line(capsys.readouterr().err, "benchmark accuracy")
    assert main(["-q", "baseline", "train-voxelmorph", "--out", str(tmp_path / "v"), "--threads", "-2"]) == 1
    assert "--threads must be >= 1, got -2" in _one_error_line(capsys.readouterr().err, "baseline train-voxelmorph")
    assert not (tmp_path / "a").exists() and not (tmp_path / "v").exists()


def test_calibrate_rejects_negative_threads(files, tmp_path, capsys):
    out = tmp_path / "c" / "net.h5"
    assert main(["-q", "calibrate", "--model", str(files["ckpt"]), "--out", str(out), "--threads", "-3"]) == 1
    assert "--threads must be >= 0 (0: torch's default), got -3" in _one_error_line(capsys.readouterr().err,
                                                                                      "calibrate")
    assert not out.parent.exists()


def test_benchmark_pareto_with_its_own_output_or_other_pairs_is_refused_up_front(tmp_path, capsys):
    """--pareto-with naming the --out folder would replace the benchmark.json it reads; a run on
    other pairs could not be drawn: both stop before any work."""
    import hashlib
    from test_pareto import _run

    run = _run(tmp_path, "run", 7.0, 4.0, 0.7, 0.05)
    before = hashlib.sha256((run / "benchmark.json").read_bytes()).hexdigest()
    assert main(["benchmark", "--out", str(run), "--pareto-with", str(run), "--no-lava", "--no-ants"]) == 1
    assert "is the same file as the input --pareto-with" in _one_error_line(capsys.readouterr().err, "benchmark")
    assert hashlib.sha256((run / "benchmark.json").read_bytes()).hexdigest() == before
    other = _run(tmp_path, "other", 7.0, 4.0, 0.7, 0.05, pairs=("pair_009",))
    out = tmp_path / "out"
    assert main(["benchmark", "--out", str(out), "--pareto-with", str(other), "--no-lava", "--no-ants",
                 "--pairs", "1", "-q"]) == 1
    assert "was scored on other pairs (pair_009) than this run (pair_000)" in _one_error_line(
        capsys.readouterr().err, "benchmark")
    assert not (out / "net.h5").exists()
