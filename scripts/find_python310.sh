#!/usr/bin/env bash
# Print the path of a Python 3.10 interpreter, or explain how to get one and fail.
# lava-nc 0.10.0 / lava-dl 0.6.0 need exactly Python 3.10 (lava-nc fails to import on 3.11).
set -u
is310() { "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 10) else 1)' >/dev/null 2>&1; }
for cand in "${PYTHON310:-}" "$(command -v python3.10 2>/dev/null)"; do
  if [ -n "$cand" ] && is310 "$cand"; then echo "$cand"; exit 0; fi
done
root="${PYENV_ROOT:-$HOME/.pyenv}"
for cand in $(ls -d "$root"/versions/3.10*/bin/python 2>/dev/null | sort -V -r); do
  if is310 "$cand"; then echo "$cand"; exit 0; fi
done
cat >&2 <<'MSG'
error: no Python 3.10 interpreter found (looked at $PYTHON310, python3.10 on PATH, ~/.pyenv/versions/3.10.*).
spikereg-neuro needs Python 3.10 exactly: lava-nc 0.10.0 and lava-dl 0.6.0 do not import on 3.11+.
Get one with, for example:
  pyenv install 3.10.13          # https://github.com/pyenv/pyenv
  sudo apt-get install python3.10 python3.10-venv   # Debian/Ubuntu with a 3.10 package
  conda create -n spikereg python=3.10
then run `make setup` again, or point to it: `make setup PYTHON310=/path/to/python3.10`.
MSG
exit 1
