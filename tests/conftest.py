"""Test session set-up.

lava-nc calls ``multiprocessing.set_start_method('fork')`` when its runtime is first imported
and fails ("context has already been set") if anything in the process already fixed the start
method (e.g. a ``get_start_method()`` call inside another library). Importing the Lava runtime
first, before any test module, makes the order deterministic.
"""
import contextlib
import io

with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    import lava.magma.runtime.message_infrastructure.multiprocessing  # noqa: F401


import pytest  # noqa: E402  (after the Lava runtime import above)
import yaml  # noqa: E402


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """Factory ``make(name, config)``: writes ``config`` (a dict of YAML sections) to a fresh
    directory as ``tiny.yaml``, loads it over the packaged default and builds its embedded data
    set under ``cache/``. Returns ``{"root", "cfg_path", "cfg", "h5"}``."""
    from spikereg_neuro.config import load_config
    from spikereg_neuro.data import build_dataset

    def make(name: str, config: dict) -> dict:
        root = tmp_path_factory.mktemp(name)
        cfg_path = root / "tiny.yaml"
        cfg_path.write_text(yaml.safe_dump(config))
        cfg = load_config(cfg_path)
        h5 = build_dataset(cfg.data, root / "cache", progress=False)
        return {"root": root, "cfg_path": cfg_path, "cfg": cfg, "h5": h5}

    return make
