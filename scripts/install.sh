#!/usr/bin/env bash
# Install VisCritic on a fresh Debian/Ubuntu machine: system packages for headless MuJoCo rendering
# (Mesa EGL, OSMesa fallback), then a virtual environment in .venv with the package and its extras.
#
#   bash scripts/install.sh            # extras: sim,rl,vlm,data,train,dev (everything that runs on a CPU)
#   EXTRAS=sim,rl bash scripts/install.sh
#   PYTHON=python3.12 VENV=.venv312 bash scripts/install.sh
#   TORCH_INDEX=<url> bash scripts/install.sh   # where torch's CPU build comes from, where this
#                                               # machine has no local wheel of it
#   SKIP_SYSTEM_PACKAGES=1 bash scripts/install.sh   # no apt: the EGL/OSMesa libraries are there
#   UNPINNED=1 bash scripts/install.sh   # newest releases in pyproject's ranges, not
#                                        # scripts/constraints.txt's (the measured ones)
#
# On a GPU node, install torch 2.13.0 of its CUDA build into the venv first: a torch that imports
# is kept. Safe to re-run: it skips what is already there (the package install too, while
# pyproject.toml, the constraints and EXTRAS are as they were).
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS="${EXTRAS:-sim,rl,vlm,data,train,dev}"
VENV="${VENV:-.venv}"
PYTHON_GIVEN="${PYTHON:-}"  # a PYTHON= the user gave: the venv must be of its version
PYTHON="${PYTHON:-python3}"
TORCH_INDEX="${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}"
# Mesa for headless MuJoCo; libGL and GLib, which robosuite's OpenCV loads at import (none of
# the Mesa ones brings them: every robosuite task failed to import without them)
SYSTEM_PACKAGES=(libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6 libgl1 "libglib2.0-0t64|libglib2.0-0")
# a compiler and C headers: evdev (robosuite -> pynput) has no wheel and is built from source, and
# DeepSpeed compiles its CPU communication op on first use (the train extra's 2-process tests)
BUILD_PACKAGES=(g++ libc6-dev)
KNOWN_EXTRAS=(sim rl vlm data train dev vllm all)

fail() { echo "[install] $*" >&2; exit 1; }

# The extras, checked before anything is installed: pip only warns about one it does not know.
is_extra() { local known; for known in "${KNOWN_EXTRAS[@]}"; do [ "$1" = "$known" ] && return 0; done; return 1; }
IFS=',' read -r -a asked <<< "$EXTRAS,"  # the comma keeps a trailing empty item
for extra in "${asked[@]}"; do
    is_extra "$extra" \
        || fail "EXTRAS=$EXTRAS: '$extra' is not an extra; pick from ${KNOWN_EXTRAS[*]} (comma-separated, no spaces, e.g. EXTRAS=sim,rl)"
done

# numpy < 2 (robosuite 1.5.2) has wheels up to Python 3.12; transformers 5.23 needs 3.11
python_fits='import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 12))'
version_of() { "$1" -c 'import platform; print(platform.python_version())' 2>/dev/null || echo "that does not run"; }
minor_of() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo "?"; }
if [ -x "$VENV/bin/python" ]; then
    "$VENV/bin/python" -c "$python_fits" 2>/dev/null \
        || fail "$VENV has Python $(version_of "$VENV/bin/python"); VisCritic needs 3.11 or 3.12: remove $VENV, or give another with VENV=.venv312 PYTHON=python3.12"
    # a PYTHON= given beside an existing venv of another version was kept without a word
    if [ -n "$PYTHON_GIVEN" ] && [ "$(minor_of "$PYTHON_GIVEN")" = "?" ]; then
        fail "PYTHON=$PYTHON_GIVEN does not run here; give a Python 3.11 or 3.12 that does (or leave PYTHON out: $VENV holds Python $(version_of "$VENV/bin/python"))"
    elif [ -n "$PYTHON_GIVEN" ] && [ "$(minor_of "$PYTHON_GIVEN")" != "$(minor_of "$VENV/bin/python")" ]; then
        fail "PYTHON=$PYTHON_GIVEN is Python $(version_of "$PYTHON_GIVEN"), and $VENV already holds Python $(version_of "$VENV/bin/python"); remove $VENV to rebuild it, or give the new one its own folder, e.g. VENV=.venv$(minor_of "$PYTHON_GIVEN" | tr -d .) PYTHON=$PYTHON_GIVEN"
    fi
else
    command -v "$PYTHON" >/dev/null || fail "PYTHON=$PYTHON is not a command; give a Python 3.11 or 3.12, e.g. PYTHON=python3.12"
    "$PYTHON" -c "$python_fits" 2>/dev/null \
        || fail "PYTHON=$PYTHON is Python $(version_of "$PYTHON"); VisCritic needs 3.11 or 3.12 (transformers 5 needs 3.11; numpy < 2, which robosuite needs, has no wheels for 3.13): e.g. PYTHON=python3.12 bash scripts/install.sh"
fi

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
apt_install() {  # the Debian/Ubuntu packages of "$@" not installed yet; "a|b": either name (a
    # library renamed by a release: Ubuntu 24.04's libglib2.0-0t64 for libglib2.0-0), the first
    # this system's apt knows installed where neither is (the last where apt knows none)
    local missing=() pkg name
    for pkg in "$@"; do
        local found=""
        for name in ${pkg//|/ }; do installed "$name" && found=1; done
        [ -n "$found" ] && continue
        local choice="${pkg##*|}"
        for name in ${pkg//|/ }; do
            if apt-cache show "$name" >/dev/null 2>&1; then choice="$name"; break; fi
        done
        missing+=("$choice")
    done
    ((${#missing[@]})) || return 0
    echo "[install] system packages: ${missing[*]}"
    local sudo=() how="run again as root, or install them with this system's package manager and run again with SKIP_SYSTEM_PACKAGES=1"
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || fail "installing ${missing[*]} needs root, and there is no sudo here: $how"
        if [ -t 0 ]; then  # at a terminal sudo may ask for the password
            sudo=(sudo)
        else
            sudo -n true 2>/dev/null || fail "installing ${missing[*]} needs root, and sudo asks for a password, which cannot be typed here (no terminal): $how"
            sudo=(sudo -n)
        fi
    fi
    # another apt (unattended-upgrades on a fresh VM) may hold its lock: wait for it up to 5 min
    local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -qq)
    "${apt[@]}" update || fail "apt-get update failed (above); $how"
    "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null \
        || fail "apt-get install ${missing[*]} failed (above); $how"
}
if [ "${SKIP_SYSTEM_PACKAGES:-0}" = 1 ]; then
    echo "[install] system packages skipped (SKIP_SYSTEM_PACKAGES=1): ${SYSTEM_PACKAGES[*]} or their like must be there"
elif ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
    fail "no apt-get here: install the EGL and OSMesa libraries headless MuJoCo renders with (Debian: ${SYSTEM_PACKAGES[*]}) with this system's package manager, then run again with SKIP_SYSTEM_PACKAGES=1"
else
    apt_install "${SYSTEM_PACKAGES[@]}"
    if [[ ",$EXTRAS," =~ ,(sim|train|all), ]]; then
        apt_install "${BUILD_PACKAGES[@]}"
        # the chosen Python's own headers (Python.h), where it has none (Debian's python3.X-dev)
        interpreter="$PYTHON"; [ -x "$VENV/bin/python" ] && interpreter="$VENV/bin/python"
        has_headers='import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'
        "$interpreter" -c "$has_headers" \
            || apt_install "python$("$interpreter" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-dev"
    fi
fi

# Everything below needs the venv's pip. A venv without it (uv's, or python3 -m venv failing
# half-way) gets pip from ensurepip, keeping its packages; only where that fails is it made again.
# Debian/Ubuntu's own python3 makes venvs only with python3-venv: installed then, not before.
has_pip() { "$VENV/bin/python" -m pip --version >/dev/null 2>&1; }
if ! has_pip && ! { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -m ensurepip >/dev/null 2>&1 && has_pip; }; then
    echo "[install] virtual environment in $VENV"
    # the chosen Python's own venv package (python3-venv is the default python3's alone)
    venv_package="python$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv"
    "$PYTHON" -m venv --clear "$VENV" || {
        [ "${SKIP_SYSTEM_PACKAGES:-0}" != 1 ] \
            || fail "$PYTHON cannot make a virtual environment; install its venv module (Debian: $venv_package), or run again without SKIP_SYSTEM_PACKAGES=1"
        apt_install "$venv_package" && "$PYTHON" -m venv --clear "$VENV"
    }
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
# torch first, pinned to the CPU build: PyPI's Linux wheel of the same version pulls CUDA's
# (gigabytes). It comes from a local wheel where pip's find-links hold one (these machines), else
# from PyTorch's CPU index. A torch that imports and computes is kept (a GPU node's own build).
# grep drops pip's notes about unused local index folders on these machines; a pip failure still
# fails the script (pipefail), only grep's "nothing left to print" is forgiven.
quiet_pip() { "${PIP[@]}" "$@" 2>&1 | { grep -v "is neither a file nor a directory" || true; }; }
# (-W ignore: torch warns that numpy, installed after it, is missing)
if ! "$VENV/bin/python" -W ignore -c "import torch; torch.zeros(1)" >/dev/null 2>&1; then
    if "${PIP[@]}" install --dry-run --no-deps --no-index "torch==2.13.0+cpu" >/dev/null 2>&1; then
        quiet_pip install "torch==2.13.0+cpu"
    elif ! quiet_pip install "torch==2.13.0+cpu" --extra-index-url "$TORCH_INDEX"; then
        echo "[install] torch's CPU build is not at $TORCH_INDEX (TORCH_INDEX= names another); torch 2.13.0 from PyPI instead, whose Linux wheel pulls CUDA's libraries (gigabytes)"
        quiet_pip install "torch==2.13.0"
    fi
fi
# a torch kept from before must be in pyproject's range, or pip replaces it with PyPI's CUDA build
# (the release only: 2.13.1 is past <=2.13.0, a local build's 2.13.0a0+git... is not)
torch_release='import re, torch; print(".".join(re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", torch.__version__).groups("0")))'
release="$("$VENV/bin/python" -W ignore -c "$torch_release")"
"$VENV/bin/python" -c "import sys; v = tuple(map(int, '$release'.split('.'))); sys.exit(not (2, 4, 0) <= v <= (2, 13, 0))" \
    || fail "$VENV has torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)'); VisCritic takes 2.4 to 2.13.0, and pip would replace it with PyPI's 2.13.0 (CUDA's libraries, gigabytes): install torch 2.13.0 of your build into $VENV, or remove $VENV"
# The measured releases (scripts/constraints.txt: the dev venv's, which the suite runs on) unless
# UNPINNED=1. They pin torch 2.13.0's own requirements (sympy, networkx...), which another kept
# torch may not take, and vLLM brings its own transformers and torch: both go unpinned.
PINS=(-c scripts/constraints.txt)
if [ "${UNPINNED:-0}" = 1 ] || [[ ",$EXTRAS," == *,vllm,* ]]; then
    PINS=()
elif [ "$release" != 2.13.0 ]; then
    echo "[install] torch $release kept: the packages go unpinned (scripts/constraints.txt holds torch 2.13.0's own requirements)"
    PINS=()
fi
# The package install is skipped while what it installs from is unchanged (pip would otherwise
# reach the index for setuptools on every run.sh and test.sh, and fail without it).
stamp="$VENV/.viscritic-install"
wanted="$(cat pyproject.toml scripts/constraints.txt | cksum) extras=$EXTRAS pins=${#PINS[@]}"
# installed, not merely importable from this folder (the check runs from /), and from this
# checkout: a copied repository, or a VENV= shared with another clone, ran the other checkout's
# packages under this one's experiments/ scripts (and its tests, which import from here)
installed='import importlib.metadata as m, pathlib, sys, critic, envs, rollout; m.version("viscritic")
sys.exit(pathlib.Path(critic.__file__).resolve().parents[1] != pathlib.Path(sys.argv[1]).resolve())'
venv_python="$(cd "$VENV" && pwd)/bin/python"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ] || ! (here="$PWD" && cd / && "$venv_python" -c "$installed" "$here" 2>/dev/null); then
    other="$(cd / && "$venv_python" -c 'import pathlib, critic; print(pathlib.Path(critic.__file__).resolve().parents[1])' 2>/dev/null || true)"
    if [ -n "$other" ] && [ "$other" != "$(pwd -P)" ]; then  # said: that checkout's scripts run these from now on
        echo "[install] $VENV held the packages of another checkout ($other): installing this one's, which that checkout's scripts will run from now on (give each its own VENV= to keep them apart)"
    fi
    rm -f "$stamp"
    # DeepSpeed (train extra): no CUDA ops to build here; the CPU ones it compiles on first use.
    DS_BUILD_OPS=0 quiet_pip install -e ".[${EXTRAS}]" "${PINS[@]}"
    "$VENV/bin/python" -c "import critic, envs, rollout" || fail "failed: the packages do not import"
    echo "$wanted" > "$stamp"
fi
versions='import importlib.metadata as m
print(", ".join(f"{p} {m.version(p)}" for p in ("torch", "mujoco", "robosuite", "transformers")
                if __import__("importlib.util").util.find_spec(p)))'
echo "[install] done: $VENV (extras $EXTRAS; $("$VENV/bin/python" -c "$versions"))"
