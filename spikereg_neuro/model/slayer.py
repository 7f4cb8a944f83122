"""lava-dl's SLAYER neuron modules, imported once and quietly (a leaf: nothing of the project).

lava-dl prints a notice about an optional dataset toolbox (stdout) and torch's extension loader
one about CUDA_HOME (stderr) when SLAYER is imported on a CPU machine; neither concerns us.
Modules that need SLAYER's neurons import them from here.
"""
from __future__ import annotations

import contextlib
import io

with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    from lava.lib.dl.slayer.neuron import alif, cuba

__all__ = ["alif", "cuba"]
