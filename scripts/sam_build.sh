#!/usr/bin/env bash
# `make build`: `sam build` with the Python the template's runtime names (Globals Runtime).
#
# SAM builds every function and the layer with `pythonX.Y` found on PATH. This script
# finds a working one (PATH, then pyenv's versions, then /usr/bin and /usr/local/bin),
# puts its directory first on PATH and runs sam from the virtualenv. Extra arguments go
# to `sam build`.
set -euo pipefail
cd "$(dirname "$0")/.."

SAM="${SAM:-.venv/bin/sam}"
version="$(sed -n 's/^ *Runtime: *python\([0-9][0-9.]*\).*$/\1/p' template.yaml | head -n 1)"
if [ -z "$version" ]; then
    echo "make build: template.yaml names no pythonX.Y Runtime" >&2
    exit 1
fi
want="python$version"

works() { [ -x "$1" ] && "$1" -c 'import sys' >/dev/null 2>&1; }

found=""
# A pyenv shim is on PATH even when the version is not selected: only a python that runs counts.
if command -v "$want" >/dev/null 2>&1 && works "$(command -v "$want")"; then
    found="$(command -v "$want")"
fi
if [ -z "$found" ]; then
    root="${PYENV_ROOT:-$HOME/.pyenv}"
    if command -v pyenv >/dev/null 2>&1; then
        root="$(pyenv root)"
    fi
    for dir in $(ls -d "$root/versions/$version".* "$root/versions/$version" 2>/dev/null | sort -V -r); do
        if works "$dir/bin/$want"; then
            found="$dir/bin/$want"
            break
        fi
    done
fi
if [ -z "$found" ]; then
    for candidate in "/usr/local/bin/$want" "/usr/bin/$want"; do
        if works "$candidate"; then
            found="$candidate"
            break
        fi
    done
fi
if [ -z "$found" ]; then
    echo "make build: no working $want found (PATH, pyenv, /usr/bin); install it, e.g. 'pyenv install $version', then re-run make build." >&2
    exit 1
fi

if [ ! -x "$SAM" ]; then
    echo "make build: $SAM not found; run 'make test' or 'make serve' once to create .venv." >&2
    exit 1
fi

echo "sam build with $found ($("$found" --version 2>&1))"
start=$(date +%s)
PATH="$(dirname "$found"):$PATH" AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}" SAM_CLI_TELEMETRY=0 \
    "$SAM" build "$@"
echo "sam build took $(($(date +%s) - start)) s"
