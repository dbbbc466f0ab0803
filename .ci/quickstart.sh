#!/usr/bin/env bash
# One entry point for the README quickstart. Creates (once) a virtual environment in .venv with the
# project and its test tools, then runs the requested job:
#   bash .ci/quickstart.sh demo   segment the bundled sample volume with the bundled model
#   bash .ci/quickstart.sh test   run the whole test suite (under a virtual display when xvfb-run exists)
# Needs only Python 3.11+ (and, for GUI tests on a headless Linux box, xvfb: `.ci/run` installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
job="${1:-demo}"; shift || true

python="${PYTHON:-python3}"
venv="${FVESEG_VENV:-.venv}"
stamp="$venv/.fveseg-installed"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "fveseg needs Python 3.11 or newer")'
    "$python" -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$venv/bin/python" -m pip install -q --upgrade pip
    # torch and torchvision pinned together: the test extra's timm needs torchvision, and the two must match.
    "$venv/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1" || \
        "$venv/bin/python" -m pip install -q torch torchvision
    "$venv/bin/python" -m pip install -q -e ".[test]"
    touch "$stamp"
fi

case "$job" in
    demo)
        exec "$venv/bin/fveseg" demo "$@" ;;
    test)
        export MPLBACKEND=Agg
        if command -v xvfb-run >/dev/null 2>&1; then
            exec xvfb-run -a -s "-screen 0 1280x1024x24" "$venv/bin/python" -m pytest "$@"
        else
            export QT_QPA_PLATFORM=offscreen
            exec "$venv/bin/python" -m pytest "$@"
        fi ;;
    *)
        echo "usage: bash .ci/quickstart.sh demo|test [args...]" >&2; exit 2 ;;
esac
