"""What every expected CLI failure prints: one line ``spikereg-neuro CMD: error: ...``, no traceback."""


def one_error_line(err: str, cmd: str, internal: bool = False) -> str:
    """The single error line of ``err`` (stderr of a failed command ``cmd``), checked; an
    "internal error" (an unexpected exception) only where ``internal``."""
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"spikereg-neuro {cmd}: error: "), lines[0]
    assert "Traceback" not in err and (internal or "internal error" not in err)
    return lines[0]
