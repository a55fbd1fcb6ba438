#!/usr/bin/env bash
# Install VisCritic on a fresh Debian/Ubuntu machine: system packages for headless MuJoCo rendering
# (Mesa EGL, OSMesa fallback), then a virtual environment in .venv with the package and its extras.
#
#   bash scripts/install.sh            # extras: sim,rl,vlm,data,train,dev (everything that runs on a CPU)
#   EXTRAS=sim,rl bash scripts/install.sh
#
# Safe to re-run: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

EXTRAS="${EXTRAS:-sim,rl,vlm,data,train,dev}"
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
SYSTEM_PACKAGES=(libegl1 libegl-mesa0 libgl1-mesa-dri libosmesa6)

apt_install() {  # the Debian/Ubuntu packages of "$@" not installed yet
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    echo "[install] system packages: ${missing[*]}"
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
apt_install "${SYSTEM_PACKAGES[@]}"

# Everything below needs the venv's pip. A venv without it (uv's, or python3 -m venv failing
# half-way) gets pip from ensurepip, keeping its packages; only where that fails is it made again.
# Debian/Ubuntu's own python3 makes venvs only with python3-venv: installed then, not before.
has_pip() { "$VENV/bin/python" -m pip --version >/dev/null 2>&1; }
if ! has_pip && ! { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -m ensurepip >/dev/null 2>&1 && has_pip; }; then
    echo "[install] virtual environment in $VENV"
    "$PYTHON" -m venv --clear "$VENV" || { apt_install python3-venv && "$PYTHON" -m venv --clear "$VENV"; }
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
# torch first, pinned to the CPU build: a range left open would pull the CUDA wheels.
# grep drops pip's notes about unused local index folders on these machines; a pip failure still
# fails the script (pipefail), only grep's "nothing left to print" is forgiven.
"$VENV/bin/python" -c "import torch" 2>/dev/null \
    || "${PIP[@]}" install "torch==2.13.0" 2>&1 | { grep -v "is neither a file nor a directory" || true; }
# DeepSpeed (train extra): no CUDA ops to build here; the CPU ones it needs it compiles on first use.
DS_BUILD_OPS=0 "${PIP[@]}" install -e ".[${EXTRAS}]" 2>&1 | { grep -v "is neither a file nor a directory" || true; }
"$VENV/bin/python" -c "import critic, envs, rollout" \
    || { echo "[install] failed: the packages do not import" >&2; exit 1; }
echo "[install] done: $VENV ($("$VENV/bin/python" -c 'import mujoco, robosuite, torch; print("mujoco", mujoco.__version__, "robosuite", robosuite.__version__, "torch", torch.__version__)' 2>/dev/null | tail -1))"
