#!/usr/bin/env bash
# Reproduce the shipped critic, critic/weights/viscritic-small, from nothing, in three steps:
#   1. the 8-frame critic (the first shipped viscritic-small, 2026-11-21; about 4 h here):
#      synthesise the data with the scripted experts, run the recipe (configs/viscritic_small.yaml,
#      then configs/viscritic_small_anneal.yaml, configs/viscritic_small_reacher56.yaml, then
#      configs/viscritic_small_frozen.yaml). The first two stages saw Reacher at 64² (its view
#      then); the last two at its 56² view;
#   2. the learned-reward loop at one frame from it, and the round with a clip per task in which
#      Reacher is distilled from the loop's critic (scripts/train_viscritic_small_loop.sh, about
#      5 h here, in its own data folder);
#   3. export that round's weights, into EXPORT_DIR (default RUN_DIR/viscritic-small; give
#      critic/weights/viscritic-small to replace the shipped critic's weights, its model card kept).
# Times and figures on the 2-core CPU are in critic/weights/viscritic-small/MODEL_CARD.md.
#   bash scripts/train_viscritic_small.sh [DATA_DIR] [RUN_DIR] [EXPORT_DIR]
# PYTHON=<interpreter> runs the steps with it; by default, ${VENV:-.venv}/bin/python after
# scripts/install.sh (which skips what is already there).
# A re-run after a failure redoes every step (overwrite=true: each step replaces its run dir).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-data}
RUN=${2:-outputs/viscritic_small/run}
EXPORT=${3:-$RUN/viscritic-small}  # not over the shipped weights, unless told: every figure reads them
if [ -z "${PYTHON:-}" ]; then
    bash scripts/install.sh
    PYTHON="${VENV:-.venv}/bin/python"
fi
PY=("$PYTHON")  # quoted wherever it runs: a path with a space stays one word
export PYTHONHASHSEED=0 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

"${PY[@]}" experiments/synthesize.py env=Reacher-v5 env.image_size=64 episodes=600 every=1 workers=2 \
    out="$DATA/Reacher-v5-64"
"${PY[@]}" experiments/synthesize.py env=Pusher-v5 episodes=300 every=2 workers=2 out="$DATA/Pusher-v5"
"${PY[@]}" experiments/synthesize.py env=Lift episodes=160 every=2 workers=2 out="$DATA/Lift"
"${PY[@]}" experiments/train_critic.py --config-name viscritic_small \
    "data=[$DATA/Reacher-v5-64,$DATA/Pusher-v5,$DATA/Lift]" overwrite=true hydra.run.dir="$RUN"
"${PY[@]}" experiments/train_critic.py --config-name viscritic_small_anneal model="$RUN/readout/final" \
    "data=[$DATA/Reacher-v5-64,$DATA/Pusher-v5,$DATA/Lift]" overwrite=true hydra.run.dir="$RUN/anneal"
"${PY[@]}" experiments/synthesize.py env=Reacher-v5 episodes=2400 every=1 workers=2 out="$DATA/Reacher-v5"
"${PY[@]}" experiments/train_critic.py --config-name viscritic_small_reacher56 \
    model="$RUN/anneal/readout/final" "data=[$DATA/Reacher-v5,$DATA/Pusher-v5,$DATA/Lift]" \
    overwrite=true hydra.run.dir="$RUN/reacher56"
"${PY[@]}" experiments/train_critic.py --config-name viscritic_small_frozen \
    model="$RUN/reacher56/readout/final" "data=[$DATA/Reacher-v5,$DATA/Pusher-v5,$DATA/Lift]" \
    overwrite=true hydra.run.dir="$RUN/frozen"
PYTHON="$PYTHON" bash scripts/train_viscritic_small_loop.sh "$RUN/frozen/readout/final" "$DATA/twoframe" \
    "$RUN/loop"
"${PY[@]}" -m critic.weights export "$RUN/loop/pertask/readout/final" "$EXPORT" --overwrite
