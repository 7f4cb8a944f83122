"""Hostile and careless input (issue 18): nothing runs from a file, no input is overwritten, every
expected failure is one line with exit 1 (usage 2, Ctrl-C 130), only ``-v`` shows a traceback.

Tiny volumes (16^3) and a tiny untrained network: the whole module runs in seconds.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from spikereg_neuro.checkpoint import DEFAULT_MODEL, read_checkpoint, save_checkpoint
from spikereg_neuro.cli import describe_error, main
from spikereg_neuro.model.config import ModelConfig
from spikereg_neuro.model.unet import SpikeRegUNet
from cli_errors import one_error_line as _one_error_line

TINY = dict(enc_channels=(4, 4, 8, 8), dec_channels=(8, 4, 4), enc_windows=(4, 3, 2, 2), dec_window=2)
SHAPE = (16, 16, 16)


class _Marker:
    """Unpickling this calls ``open(marker, "w")``: the file appears iff code from the pickle ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny checkpoint, a fixed/moving/labels triple, and a malicious checkpoint."""
    root = tmp_path_factory.mktemp("hostile")
    torch.manual_seed(0)
    net = SpikeRegUNet(ModelConfig(**TINY)).eval()
    ckpt = save_checkpoint(root / "tiny.pt", net, {"inference": {"patch_size": 16, "stride": 16, "batch_size": 2}})
    rng = np.random.default_rng(0)
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    paths = {"root": root, "ckpt": ckpt}
    for name in ("fixed", "moving"):
        paths[name] = root / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(rng.random(SHAPE).astype(np.float32), aff), str(paths[name]))
    paths["labels"] = root / "labels.nii.gz"
    nib.save(nib.Nifti1Image(rng.integers(0, 4, SHAPE).astype(np.int16), aff), str(paths["labels"]))
    # a real checkpoint with one extra key whose unpickling would create a marker file
    paths["marker"] = root / "PWNED"
    evil = torch.load(ckpt, weights_only=True)
    evil["extra"] = _Marker(paths["marker"])
    paths["evil"] = root / "evil.pt"
    torch.save(evil, paths["evil"])
    return paths


def _register(files, *extra, out=None):
    out = out or (files["root"] / "out" / "w.nii.gz")
    return ["register", str(files["fixed"]), str(files["moving"]), "--out-warped", str(out),
            "--model", str(files["ckpt"]), *extra]


# ============================================================================ code execution
def test_malicious_checkpoint_runs_nothing(files, capsys):
    from spikereg_neuro.baselines.voxelmorph import load_voxelmorph

    marker = files["marker"]
    with pytest.raises(ValueError, match="unsafe unpickling") as ei:
        read_checkpoint(files["evil"])
    assert str(files["evil"]) in str(ei.value) and "\n" not in str(ei.value)
    with pytest.raises(ValueError, match="unsafe unpickling"):
        load_voxelmorph(files["evil"])
    out = files["root"] / "evil_out" / "w.nii.gz"
    rc = main(["register", str(files["fixed"]), str(files["moving"]), "--out-warped", str(out),
               "--model", str(files["evil"])])
    assert rc == 1
    assert "unsafe unpickling" in _one_error_line(capsys.readouterr().err, "register")
    rc = main(["loihi", "export", "--net", str(files["evil"]), "--out", str(files["root"] / "evil_d.h5")])
    assert rc == 1 and "unsafe unpickling" in _one_error_line(capsys.readouterr().err, "loihi export")
    assert not marker.exists() and not out.exists() and not (files["root"] / "evil_d.h5").exists()
    # the file really is malicious: the unsafe loader would have run its callable
    torch.load(files["evil"], weights_only=False)
    assert marker.exists()
    marker.unlink()


def test_trained_checkpoint_round_trips_with_weights_only(files):
    ck = read_checkpoint(files["ckpt"])
    assert ck["format"] == "spikereg-neuro/checkpoint" and "state_dict" in ck


def test_shipped_models_load_safely_and_are_checksummed(tmp_path, monkeypatch):
    from spikereg_neuro import checkpoint as ckmod
    from spikereg_neuro.baselines import voxelmorph as vxm
    from spikereg_neuro.io.safe_load import _sha256_cached, verify_shipped

    for pt in (DEFAULT_MODEL, vxm.DEFAULT_VOXELMORPH_MODEL):
        if not pt.is_file():
            pytest.skip(f"{pt} not shipped in this checkout")
        rec = json.loads(pt.with_suffix(".json").read_text())
        assert verify_shipped(pt) == rec["sha256"]
        torch.load(pt, map_location="cpu", weights_only=True)  # plain types only
    hits = _sha256_cached.cache_info().hits
    verify_shipped(DEFAULT_MODEL)
    assert _sha256_cached.cache_info().hits == hits + 1  # hashed once per process
    assert read_checkpoint(DEFAULT_MODEL)["format"] == "spikereg-neuro/checkpoint"
    # a damaged shipped model (bytes flipped, still unpicklable) is refused before loading
    bad = tmp_path / "default.pt"
    data = bytearray(DEFAULT_MODEL.read_bytes())
    data[len(data) // 2: len(data) // 2 + 16] = bytes(16)
    bad.write_bytes(bytes(data))
    shutil.copy(DEFAULT_MODEL.with_suffix(".json"), tmp_path / "default.json")
    monkeypatch.setattr(ckmod, "DEFAULT_MODEL", bad)
    with pytest.raises(ValueError, match="shipped model .* checksum mismatch"):
        read_checkpoint(bad)
    vbad = tmp_path / "voxelmorph_default.pt"
    vbad.write_bytes(vxm.DEFAULT_VOXELMORPH_MODEL.read_bytes()[:-10] + b"0123456789")
    shutil.copy(vxm.DEFAULT_VOXELMORPH_MODEL.with_suffix(".json"), tmp_path / "voxelmorph_default.json")
    monkeypatch.setattr(vxm, "DEFAULT_VOXELMORPH_MODEL", vbad)
    with pytest.raises(ValueError, match="shipped model .* checksum mismatch"):
        vxm.load_voxelmorph(vbad)


def test_a_corrupted_trained_checkpoint_is_refused(files, tmp_path):
    """Every checkpoint records its weights' sha256: flipped weight bytes are an error, not
    another field (the flipped bytes still unpickle: they sit inside a tensor's storage)."""
    ck = torch.load(files["ckpt"], weights_only=True)
    assert len(ck["weights_sha256"]) == 64
    ck["state_dict"]["enc.1.synapse.weight"].view(-1)[:8] += 0.125
    bad = tmp_path / "flipped.pt"
    torch.save(ck, bad)
    with pytest.raises(ValueError, match="do not match the sha256"):
        read_checkpoint(bad)


def test_train_checks_its_device_and_cache_before_any_work(tmp_path, capsys):
    import yaml
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"train": {"device": "tpu9"}}))
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run")]) == 1
    assert "train.device 'tpu9' is not a torch device" in _one_error_line(capsys.readouterr().err, "train")
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["train", "--out", str(tmp_path / "run"), "--cache", str(afile / "sub")]) == 1
    assert "is not a folder" in _one_error_line(capsys.readouterr().err, "train")
    assert not (tmp_path / "run").exists()


# ============================================================================ output paths
def test_register_never_overwrites_an_input(files, capsys, tmp_path):
    before = {k: _digest(files[k]) for k in ("fixed", "moving", "labels", "ckpt")}
    link = tmp_path / "link.nii.gz"
    link.symlink_to(files["moving"])
    w = tmp_path / "w.nii.gz"
    cases = [
        (_register(files, out=files["moving"]), "same file as the input MOVING"),
        (_register(files, out=link), "same file as the input MOVING"),
        (_register(files, "--out-field", str(w), out=w), "are the same file"),
        (_register(files, "--moving-labels", str(files["labels"]), "--out-warped-labels", str(files["labels"])),
         "same file as the input --moving-labels"),
        (_register(files, "--out-field", str(files["fixed"])), "same file as the input FIXED"),
        (_register(files, out=tmp_path / "w.txt"), "must end with .nii or .nii.gz"),
        (_register(files, out=tmp_path / "adir.nii.gz"), "is a directory"),
        (_register(files, out=files["ckpt"] / "w.nii.gz"), "is a file, not a directory"),
    ]
    (tmp_path / "adir.nii.gz").mkdir()
    for argv, msg in cases:
        assert main(argv) == 1, argv
        assert msg in _one_error_line(capsys.readouterr().err, "register"), argv
    assert {k: _digest(files[k]) for k in before} == before
    assert not w.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["adir.nii.gz", "link.nii.gz"]


def test_register_writes_outputs_into_new_directories(files, tmp_path, capsys):
    out = tmp_path / "new" / "sub" / "w.nii.gz"
    assert main(_register(files, "--out-field", str(tmp_path / "new" / "u.nii.gz"), out=out)) == 0
    assert out.is_file() and (tmp_path / "new" / "u.nii.gz").is_file()


def test_calibrate_and_loihi_refuse_to_overwrite_inputs(files, tmp_path, capsys):
    ck_h5 = tmp_path / "model.h5"  # a checkpoint under an .h5 name: passes the suffix check
    shutil.copy(files["ckpt"], ck_h5)
    before = _digest(ck_h5)
    assert main(["calibrate", "--model", str(ck_h5), "--out", str(ck_h5)]) == 1
    assert "same file as the input --model" in _one_error_line(capsys.readouterr().err, "calibrate")
    assert main(["calibrate", "--model", str(files["ckpt"]), "--out", str(tmp_path / "net.pt")]) == 1
    assert "must end with .h5" in _one_error_line(capsys.readouterr().err, "calibrate")
    rep = tmp_path / "calibration_report.json"
    shutil.copy(files["ckpt"], rep)
    assert main(["calibrate", "--model", str(rep), "--out", str(tmp_path / "net.h5")]) == 1
    assert "same file as the input --model" in _one_error_line(capsys.readouterr().err, "calibrate")
    rep.unlink()

    net = tmp_path / "net.h5"
    net.write_bytes(b"precious")
    assert main(["loihi", "export", "--net", str(net), "--out", str(net)]) == 1
    assert "same file as the input --net" in _one_error_line(capsys.readouterr().err, "loihi export")
    assert main(["loihi", "export", "--net", str(net), "--out", str(tmp_path / "d.json")]) == 1
    assert "must end with .h5" in _one_error_line(capsys.readouterr().err, "loihi export")
    assert main(["loihi", "map", "--net", str(net), "--out", str(net)]) == 1
    assert "is a file, not a directory" in _one_error_line(capsys.readouterr().err, "loihi map")
    mj = tmp_path / "m" / "mapping.json"
    mj.parent.mkdir()
    mj.write_bytes(b"precious")
    assert main(["loihi", "map", "--net", str(mj), "--out", str(mj.parent)]) == 1
    assert "same file as the input --net" in _one_error_line(capsys.readouterr().err, "loihi map")
    assert main(["loihi", "run", "--net", str(net), "--out", str(net)]) == 1
    assert "same file as the input --net" in _one_error_line(capsys.readouterr().err, "loihi run")
    assert _digest(ck_h5) == before and net.read_bytes() == b"precious" and mj.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "model.h5", "net.h5"]


# ============================================================================ bad inputs
def test_directory_and_truncated_inputs_are_one_line_errors(files, tmp_path, capsys):
    d = tmp_path / "vol.nii.gz"
    d.mkdir()
    out = tmp_path / "out" / "w.nii.gz"
    argv = ["register", str(d), str(files["moving"]), "--out-warped", str(out), "--model", str(files["ckpt"])]
    assert main(argv) == 1
    assert "directory" in _one_error_line(capsys.readouterr().err, "register")
    assert main(_register(files, "--model", str(tmp_path), out=out)) == 1
    assert str(tmp_path) in _one_error_line(capsys.readouterr().err, "register")
    raw = files["moving"].read_bytes()
    for name, data in (("half.nii.gz", raw[: len(raw) // 2]), ("head.nii.gz", raw[:60]), ("empty.nii.gz", b"")):
        bad = tmp_path / name
        bad.write_bytes(data)
        argv = ["register", str(files["fixed"]), str(bad), "--out-warped", str(out), "--model", str(files["ckpt"])]
        assert main(argv) == 1, name
        assert str(bad) in _one_error_line(capsys.readouterr().err, "register"), name
    nii = tmp_path / "m.nii"
    nib.save(nib.Nifti1Image(np.ones(SHAPE, np.float32), np.eye(4)), str(nii))
    nii.write_bytes(nii.read_bytes()[:-100])
    argv = ["register", str(files["fixed"]), str(nii), "--out-warped", str(out), "--model", str(files["ckpt"])]
    assert main(argv) == 1 and str(nii) in _one_error_line(capsys.readouterr().err, "register")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x80\x02garbage")
    assert main(_register(files, "--model", str(garbage), out=out)) == 1
    assert "not a readable torch checkpoint" in _one_error_line(capsys.readouterr().err, "register")
    assert not out.parent.exists()


def test_bad_devices_are_checked_up_front(files, tmp_path, capsys):
    out = tmp_path / "w.nii.gz"
    assert main(_register(files, "--device", "tpu9", out=out)) == 1
    assert "not a torch device" in _one_error_line(capsys.readouterr().err, "register")
    if not torch.cuda.is_available():
        assert main(_register(files, "--device", "cuda", out=out)) == 1
        assert "--device cuda" in _one_error_line(capsys.readouterr().err, "register")
    assert main(_register(files, "--device", "cuda:99", out=out)) == 1
    _one_error_line(capsys.readouterr().err, "register")
    assert not out.exists()


# ============================================================================ the error boundary
def test_ctrl_c_exits_130_with_one_line_and_no_partial_file(files, tmp_path, capsys, monkeypatch):
    out = tmp_path / "w.nii.gz"
    real_save = nib.save

    def interrupted_save(img, filename):  # half a file written, then Ctrl-C
        Path(filename).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(nib, "save", interrupted_save)
    assert main(_register(files, out=out)) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "spikereg-neuro register: interrupted" and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temporary file
    monkeypatch.setattr(nib, "save", real_save)


def test_verbose_shows_the_traceback(files, tmp_path, capsys):
    argv = _register(files, out=files["moving"])
    assert main(argv) == 1 and "Traceback" not in capsys.readouterr().err
    assert main(["-v", *argv]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "same file as the input MOVING" in err


def test_unexpected_errors_memory_and_usage(files, capsys, monkeypatch):
    import spikereg_neuro.inference as inf

    def boom(*a, **k):
        raise RuntimeError("something\nunexpected")

    monkeypatch.setattr(inf.SpikeRegInference, "register", boom)
    assert main(_register(files)) == 1
    line = _one_error_line(capsys.readouterr().err, "register", internal=True)
    assert "internal error: RuntimeError: something unexpected" in line and "-v" in line

    def oom(*a, **k):
        raise MemoryError("Unable to allocate 238. GiB for an array with shape (4000, 4000, 4000)")

    monkeypatch.setattr(inf.SpikeRegInference, "register", oom)
    assert main(_register(files)) == 1
    assert "out of memory" in _one_error_line(capsys.readouterr().err, "register")
    assert describe_error(PermissionError(13, "Permission denied", "/x/y.nii.gz")) == "/x/y.nii.gz: Permission denied"
    with pytest.raises(SystemExit) as ei:
        main(["register"])
    assert ei.value.code == 2
    with pytest.raises(SystemExit) as ei:
        main(["--version"])
    assert ei.value.code == 0 and "spikereg-neuro" in capsys.readouterr().out


# ============================================================================ silent wrong results
def test_warped_labels_keep_their_values_and_type(files, tmp_path):
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    big = np.zeros(SHAPE, np.int32)
    big[4:12, 4:12, 4:12] = 40_000          # wraps in int16
    big[6:10, 6:10, 6:10] = 2 ** 24 + 1     # not representable in float32
    lp = tmp_path / "big_labels.nii.gz"
    img = nib.Nifti1Image(big, aff)
    img.set_data_dtype(np.int32)
    nib.save(img, str(lp))
    out = tmp_path / "wl.nii.gz"
    assert main(_register(files, "--moving-labels", str(lp), "--out-warped-labels", str(out),
                          out=tmp_path / "w.nii.gz")) == 0
    wl = nib.load(str(out))
    assert wl.get_data_dtype() == np.int32
    assert set(np.unique(np.asarray(wl.dataobj))) <= {0, 40_000, 2 ** 24 + 1}
    assert 2 ** 24 + 1 in np.asarray(wl.dataobj)
    from spikereg_neuro.io.nifti import load_labels
    assert load_labels(lp)[0].max() == 2 ** 24 + 1


def test_constant_images_and_absurd_fields_are_errors(files, tmp_path, capsys, monkeypatch):
    zero = tmp_path / "zero.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), str(zero))
    out = tmp_path / "w.nii.gz"
    argv = ["register", str(zero), str(files["moving"]), "--out-warped", str(out), "--model", str(files["ckpt"])]
    assert main(argv) == 1
    assert "is constant" in _one_error_line(capsys.readouterr().err, "register")
    import spikereg_neuro.inference as inf
    for value, msg in ((1.8e16, "absurd displacement field"), (float("nan"), "non-finite")):
        monkeypatch.setattr(inf.SpikeRegInference, "register",
                            lambda self, f, m, v=value: np.full((3, *f.shape), v, np.float32))
        assert main(_register(files, out=out)) == 1
        assert msg in _one_error_line(capsys.readouterr().err, "register")
    assert not out.exists()


def test_odd_but_valid_inputs_register_and_bad_ones_fail_up_front(files, tmp_path, capsys):
    """A sparse image, an MGH FIXED, an upper-case suffix and labels above int32 all work; complex
    data, an empty volume and labels that miss FIXED are one-line errors with nothing written."""
    from spikereg_neuro.inference import normalize_intensity
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    sparse = np.zeros(SHAPE, np.float32)
    sparse[4:6, 4:6, 4:6] = 100.0  # 8 bright voxels: the 0.5 / 99.5 % percentiles coincide
    assert normalize_intensity(sparse).max() == 1.0
    with pytest.raises(ValueError, match=r"constant \(every voxel is 0.5\)"):
        normalize_intensity(np.full(SHAPE, 0.5, np.float32))  # in [0, 1] but still constant
    # a scan in [0, 1] that uses little of it is stretched like the same scan at any other scale;
    # a volume on the training scale (low percentile 0, high one near 1) is left as it is
    rng = np.random.default_rng(0)
    t1 = rng.random(SHAPE).astype(np.float32) * 255
    t1[: SHAPE[0] // 4] = 0                                       # background
    raw = normalize_intensity(t1 * 1000)
    spot = t1 / 765
    spot.flat[np.argmax(t1)] = 1.0                                # divided by 765, one bright voxel at 1
    for faint in (t1 / 765, t1 / 2550, spot):
        assert np.allclose(normalize_intensity(faint.astype(np.float32)), raw, atol=1e-5)
    trained = np.clip(t1 / np.percentile(t1, 99.0), 0, 1).astype(np.float32)
    assert np.array_equal(normalize_intensity(trained), trained)
    sp = tmp_path / "sparse.nii.gz"
    nib.save(nib.Nifti1Image(sparse, aff), str(sp))
    mgz = tmp_path / "fixed.mgz"
    nib.save(nib.MGHImage(np.asarray(nib.load(str(files["fixed"])).dataobj, np.float32), aff), str(mgz))
    big = tmp_path / "big.nii.gz"
    lab = np.zeros(SHAPE, np.int64)
    lab[2:14, 2:14, 2:14] = 2 ** 40
    nib.save(nib.Nifti1Image(lab, aff, dtype=np.int64), str(big))
    for fixed, extra, out in ((sp, (), "a.nii.gz"), (mgz, (), "b.nii.gz"), (files["fixed"], (), "C.NII.GZ"),
                              (files["fixed"], ("--moving-labels", str(big), "--out-warped-labels",
                                                str(tmp_path / "bl.nii.gz")), "d.nii.gz")):
        argv = ["register", str(fixed), str(files["moving"]), "--out-warped", str(tmp_path / out),
                "--model", str(files["ckpt"]), *extra]
        assert main(argv) == 0, capsys.readouterr().err
        assert nib.load(str(tmp_path / out)).shape == SHAPE
    wl = nib.load(str(tmp_path / "bl.nii.gz"))
    assert wl.get_data_dtype() == np.int64 and 2 ** 40 in np.asarray(wl.dataobj)
    capsys.readouterr()

    cplx = tmp_path / "cplx.nii.gz"
    nib.save(nib.Nifti1Image(np.ones(SHAPE, np.complex64), aff), str(cplx))
    empty = tmp_path / "empty.nii"
    nib.save(nib.Nifti1Image(np.zeros((0, 16, 16), np.float32), aff), str(empty))
    far = tmp_path / "far.nii.gz"
    far_aff = aff.copy()
    far_aff[0, 3] = 1000.0  # 1 m to the side
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.int16), far_aff), str(far))
    out = tmp_path / "x.nii.gz"
    for argv, msg in (
            ([str(files["fixed"]), str(cplx)], "complex"),
            ([str(empty), str(files["moving"])], "the volume is empty"),
            ([str(files["fixed"]), str(files["moving"]), "--moving-labels", str(far), "--out-warped-labels",
              str(tmp_path / "xl.nii.gz")], "does not overlap FIXED"),
    ):
        assert main(["register", *argv, "--out-warped", str(out), "--model", str(files["ckpt"])]) == 1
        err = capsys.readouterr().err  # (the far labels' grid warning comes first)
        assert msg in _one_error_line(err.strip().splitlines()[-1], "register")
        assert not out.exists() and not (tmp_path / "xl.nii.gz").exists()


def test_header_claiming_huge_volume_is_refused_before_allocation(files, tmp_path, capsys):
    import gzip

    hdr = nib.Nifti1Header()
    hdr.set_data_shape((30000, 30000, 30000))  # 100 TiB as float32
    hdr.set_data_dtype(np.float32)
    hdr["vox_offset"] = 352
    blob = hdr.binaryblock + b"\0" * 4 + np.zeros(64, np.float32).tobytes()
    raw = tmp_path / "huge.nii"
    raw.write_bytes(blob)
    gz = tmp_path / "huge.nii.gz"
    gz.write_bytes(gzip.compress(blob))
    out = tmp_path / "out" / "w.nii.gz"
    for path, msg in ((raw, "but the file has"), (gz, "GiB available")):
        argv = ["register", str(files["fixed"]), str(path), "--out-warped", str(out), "--model", str(files["ckpt"])]
        assert main(argv) == 1
        line = _one_error_line(capsys.readouterr().err, "register")
        assert "30000x30000x30000" in line and msg in line, line


def test_singular_affine_and_demo_arguments(files, tmp_path, capsys):
    p = tmp_path / "singular.nii"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random(SHAPE).astype(np.float32), np.eye(4)), str(p))
    raw = bytearray(p.read_bytes())
    hdr = nib.Nifti1Header.from_fileobj(open(p, "rb"))
    hdr["srow_x"], hdr["sform_code"], hdr["qform_code"] = [0, 0, 0, 0], 1, 0
    raw[:348] = hdr.binaryblock
    p.write_bytes(bytes(raw))
    argv = ["register", str(p), str(files["moving"]), "--out-warped", str(tmp_path / "w.nii.gz"),
            "--model", str(files["ckpt"])]
    assert main(argv) == 1
    assert "affine is singular" in _one_error_line(capsys.readouterr().err, "register")
    assert main(["demo", "--pairs", "-1", "--model", str(files["ckpt"]), "--out", str(tmp_path / "d")]) == 1
    assert "--pairs must be >= 0" in _one_error_line(capsys.readouterr().err, "demo")
    assert main(["demo", "--model", str(files["ckpt"]), "--out", str(files["ckpt"])]) == 1
    assert "is a file, not a directory" in _one_error_line(capsys.readouterr().err, "demo")


def test_simulate_refuses_to_overwrite_its_net(tmp_path, capsys):
    net = tmp_path / "net.h5"
    net.write_bytes(b"precious")
    for extra in ([], ["--full"]):
        assert main(["simulate", "--net", str(net), "--out", str(net), "--backend", "emulator", *extra]) == 1
        assert "same file as the input --net" in capsys.readouterr().err
    assert net.read_bytes() == b"precious"


def test_malformed_data_files_and_arguments_fail_up_front(files, tmp_path, capsys, monkeypatch):
    """pairs.json entries that are not pair mappings, a non-integer version, a binary file as
    JSON, a file as --out and out-of-range calibrate arguments: one line each, before any work."""
    import h5py

    import calibration.netfile as nf
    from spikereg_neuro.data.learn2reg import PAIRS_FORMAT

    def acc(data, out=tmp_path / "acc"):
        return main(["benchmark", "accuracy", "--data", str(data), "--methods", "identity", "--out", str(out),
                     "--no-progress"])

    for name, doc, msg in (("ints", {"version": 1, "pairs": [1, 2]}, "a pair entry must be a mapping"),
                           ("num", {"version": 1, "pairs": [{"fixed": 5, "moving": "m.nii.gz"}]},
                            "'fixed' must be a path"),
                           ("vnull", {"version": None, "pairs": []}, "'version' must be an integer")):
        d = tmp_path / name
        d.mkdir()
        (d / "pairs.json").write_text(json.dumps({"format": PAIRS_FORMAT, **doc}))
        assert acc(d) == 1
        assert msg in _one_error_line(capsys.readouterr().err, "benchmark accuracy")
    b = tmp_path / "bin" / "pairs.json"
    b.parent.mkdir()
    b.write_bytes(Path(files["fixed"]).read_bytes())  # gzip bytes
    assert acc(b.parent) == 1
    assert "not a JSON file" in _one_error_line(capsys.readouterr().err, "benchmark accuracy")
    assert acc(b.parent, out=files["fixed"]) == 1  # --out is checked before the data is read
    assert "is a file, not a directory" in _one_error_line(capsys.readouterr().err, "benchmark accuracy")

    for flag, value, msg in (("--eval-pairs", "-1", "--eval-pairs must be >= 0"),
                             ("--max-calib-patches", "-5", "--max-calib-patches must be >= 0"),
                             ("--headroom-bits", "40", "--headroom-bits must be in [0, 23)")):
        assert main(["calibrate", "--model", str(files["ckpt"]), "--out", str(tmp_path / "n.h5"), flag, value]) == 1
        assert msg in _one_error_line(capsys.readouterr().err, "calibrate")
    assert not (tmp_path / "n.h5").exists()

    d = tmp_path / "netdir"
    d.mkdir()
    for argv, cmd in ((["simulate", "--net", str(d), "--out", str(tmp_path / "s.json")], "simulate"),
                      (["loihi", "map", "--net", str(d), "--out", str(tmp_path / "map")], "loihi map")):
        assert main(argv) == 1
        assert f"got a directory: {d}" in _one_error_line(capsys.readouterr().err, cmd)

    h5 = tmp_path / "damaged.h5"
    with h5py.File(h5, "w") as f:
        f.attrs["format"], f.attrs["format_version"] = nf.FORMAT, nf.FORMAT_VERSION

    def damaged(f, path):
        raise RuntimeError("Can't synchronously determine if attribute exists (bad version number)")
    monkeypatch.setattr(nf, "_read_qnet_file", damaged)
    with pytest.raises(nf.NetFileError, match=r"damaged.h5: damaged HDF5 file \(Can't synchronously"):
        nf.load_qnet(h5)


def test_register_symmetric_cancels_the_motion_of_an_image_to_itself(files, tmp_path, capsys):
    """--symmetric registers both ways: an image against itself moves far less than one way, and a
    bad inference.symmetric in a config is a one-line error."""
    from spikereg_neuro.config import InferenceConfig
    mean_motion = {}
    for extra in ((), ("--symmetric",)):
        out = tmp_path / f"w{len(extra)}.nii.gz"
        field = tmp_path / f"u{len(extra)}.nii.gz"
        args = ["register", str(files["fixed"]), str(files["fixed"]), "--out-warped", str(out),
                "--out-field", str(field), "--model", str(files["ckpt"]), "-q", *extra]
        assert main(args) == 0, capsys.readouterr().err
        mean_motion[extra] = float(np.linalg.norm(np.asarray(nib.load(str(field)).dataobj), axis=-1).mean())
    assert mean_motion[("--symmetric",)] < 0.05 * mean_motion[()], mean_motion
    with pytest.raises(ValueError, match="inference.symmetric must be true or false"):
        InferenceConfig(symmetric="yes")


def test_outputs_never_replace_a_file_of_an_input_folder_nor_come_from_empty_names(files, tmp_path, capsys):
    """An output naming a file that a --data folder's pairs read is refused (simulate once
    replaced a pair's image with its run.json), a new file in that folder is not; an empty output
    name is an error, not "no output"; a timeout of 0 s is refused before Lava starts."""
    from spikereg_neuro.train.folder_data import data_files
    data = tmp_path / "pairs"
    data.mkdir()
    image = data / "m.nii.gz"
    shutil.copy(files["moving"], image)
    shutil.copy(files["fixed"], data / "f.nii.gz")
    from spikereg_neuro.data.learn2reg import PAIRS_FORMAT, PAIRS_VERSION
    (data / "pairs.json").write_text(json.dumps({"format": PAIRS_FORMAT, "version": PAIRS_VERSION, "pairs": [
        {"fixed": "f.nii.gz", "moving": "m.nii.gz", "name": "p0"}]}))
    assert set(data_files(data).values()) == {data / "f.nii.gz", image, data / "pairs.json"}
    before = _digest(image)
    for argv, flag in ((["simulate", "--net", str(files["ckpt"]), "--data", str(data), "--backend", "emulator",
                         "--out", str(image)], "--out"),
                       (["simulate", "--net", str(files["ckpt"]), "--data", str(data), "--full", "--backend",
                         "emulator", "--out", str(tmp_path / "r.json"), "--field", str(image)], "--field")):
        assert main(argv) == 1
        assert f"{flag} {image} is the same file as the input --data file m.nii.gz" in _one_error_line(
            capsys.readouterr().err, "simulate")
    assert _digest(image) == before
    from spikereg_neuro.io.paths import check_outputs
    (data / "run.json").write_text("{}")            # an earlier run's output in the folder: may be replaced
    check_outputs(data_files(data), {"--out": data / "run.json"})
    with pytest.raises(ValueError, match="--out-field is empty"):
        check_outputs({}, {"--out-field": ""})
    for extra in (["--out-field", ""], ["--out-warped", ""]):
        argv = _register(files, out=tmp_path / "w.nii.gz")
        if extra[0] == "--out-warped":
            argv[argv.index("--out-warped") + 1] = ""
        else:
            argv += extra
        assert main(argv) == 1
        assert f"{extra[0]} is empty" in _one_error_line(capsys.readouterr().err, "register")
    assert not (tmp_path / "w.nii.gz").exists()
    assert main(["simulate", "--net", str(files["ckpt"]), "--backend", "lava", "--timeout", "0"]) == 1
    assert "--timeout must be a number of seconds > 0" in _one_error_line(capsys.readouterr().err, "simulate")


def test_a_pair_that_cannot_be_read_is_not_called_off_grid(files, tmp_path):
    """Only a grid mismatch says "not on one grid"; NaN or another shape keep their own words."""
    from spikereg_neuro.train.folder_data import load_pair_at
    nan = np.asarray(nib.load(str(files["fixed"])).dataobj, np.float32).copy()
    nan[0, 0, 0] = np.nan
    bad = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(nan, np.diag([2.0, 2.0, 2.0, 1.0])), str(bad))
    with pytest.raises(ValueError) as exc:
        load_pair_at(bad, files["moving"], None)
    assert "NaN" in str(exc.value) and "not on one grid" not in str(exc.value)
    other = tmp_path / "other.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.diag([2.0, 2.0, 2.0, 1.0])), str(other))
    with pytest.raises(ValueError, match="not on one grid"):
        load_pair_at(other, files["moving"], None)
