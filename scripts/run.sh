#!/usr/bin/env bash
# Install (if needed) and run the main job: the zero-shot RL experiment with its defaults.
#   bash scripts/run.sh                        # defaults (configs/zero_shot_rl.yaml)
#   bash scripts/run.sh env=Lift algo=ppo relabel=false reward.between_queries=hold   # hydra overrides pass through
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# exec: a SIGTERM to this script reaches the run (it stops within a step and keeps what
# finished), where it killed bash alone and left the run going
exec "${VENV:-.venv}"/bin/python experiments/zero_shot_rl.py "$@"
