#!/usr/bin/env bash
# Install (if needed) and run the main job: the zero-shot RL experiment with its defaults.
#   bash scripts/run.sh                        # defaults (configs/zero_shot_rl.yaml)
#   bash scripts/run.sh env=Lift algo=ppo relabel=false reward.between_queries=hold   # hydra overrides pass through
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
"${VENV:-.venv}"/bin/python experiments/zero_shot_rl.py "$@"
