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
