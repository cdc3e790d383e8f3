#!/usr/bin/env bash
# Creates the virtualenv of the Python oslo.messaging peer (harness/peers/oslo_peer.py), idempotently.
#
# Usage: harness/peers/setup.sh [VENV_DIR]
#   VENV_DIR defaults to $OSLO_PEER_VENV, then to <repo root>/.venv-oslo
#   PYTHON   selects the interpreter used to create the venv (default: python3; needs >= 3.9)
#
# The same thing is done by `cargo run -p harness -- peer setup` (which runs this script).
#
# A rerun is a fast no-op: the venv records the sha256 of requirements.txt in .amqp1-rig-stamp after a
# successful install and import check; when the stamp matches and the imports work, nothing is installed.
#
# Build prerequisites (python-qpid-proton 0.40.0 is built from its sdist), Debian packages:
#   apt-get install -y gcc pkg-config libssl-dev python3-dev python3-venv
# (python3-dev/python3-venv only when python3 is Debian's; a pyenv Python ships its headers and venv.)
# libsasl2-dev is deliberately NOT needed: without it proton uses its built-in SASL (ANONYMOUS, PLAIN, EXTERNAL),
# which is all the harness uses, and the build is the same on every machine.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
req="$here/requirements.txt"
venv="${1:-${OSLO_PEER_VENV:-$root/.venv-oslo}}"
python="${PYTHON:-python3}"
stamp="$venv/.amqp1-rig-stamp"
check='import oslo_messaging, pyngus, proton, oslotest, testscenarios
from importlib.metadata import version
got = (version("oslo.messaging"), version("pyngus"), version("python-qpid-proton"))
want = ("14.9.3", "2.3.1", "0.40.0")
assert got == want, "pinned versions differ: got %r, want %r" % (got, want)
print("oslo.messaging %s, pyngus %s, python-qpid-proton %s" % got)'

say() { printf 'peer setup: %s\n' "$*" >&2; }

want_hash="$(sha256sum "$req" | cut -d' ' -f1)"

if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want_hash" ]]; then
    if versions="$("$venv/bin/python" -W ignore -c "$check" 2>/dev/null)"; then
        say "up to date: $venv ($versions); nothing to do"
        exit 0
    fi
    say "venv $venv has a stamp but its imports fail; reinstalling"
fi

# Prerequisites, checked up front so a missing one gives one clear message instead of a compiler error.
missing=()
command -v "$python" >/dev/null 2>&1 || missing+=("$python (set PYTHON=...)")
command -v gcc >/dev/null 2>&1 || missing+=("gcc")
command -v pkg-config >/dev/null 2>&1 || missing+=("pkg-config")
if command -v pkg-config >/dev/null 2>&1 && ! pkg-config --exists openssl; then missing+=("libssl-dev"); fi
if command -v "$python" >/dev/null 2>&1; then
    inc="$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
    [[ -f "$inc/Python.h" ]] || missing+=("Python headers ($inc/Python.h; Debian: python3-dev)")
    "$python" -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=("python venv/ensurepip (Debian: python3-venv)")
fi
if ((${#missing[@]})); then
    say "missing prerequisites: ${missing[*]}"
    say "on Debian: apt-get install -y gcc pkg-config libssl-dev python3-dev python3-venv"
    exit 1
fi

if [[ ! -x "$venv/bin/python" ]]; then
    say "creating venv $venv with $("$python" --version 2>&1)"
    "$python" -m venv "$venv"
else
    say "reusing venv $venv"
fi

rm -f "$stamp"
say "installing pinned requirements from $req (python-qpid-proton builds from source; about a minute)"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input -r "$req"
versions="$("$venv/bin/python" -W ignore -c "$check")"
printf '%s\n' "$want_hash" > "$stamp"
say "ready: $venv ($versions)"
