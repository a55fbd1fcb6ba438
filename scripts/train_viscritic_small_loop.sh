#!/usr/bin/env bash
# The two-frame critic after the learned-reward loop (docs/reward_loop.md, "A two-frame critic in
# the loop", "Round 5 and hindsight rollouts", "One checkpoint for the three tasks"), from the
# 8-frame critic of step 1 of scripts/train_viscritic_small.sh (which runs this script next):
#   1. data: scripted Reacher at every frame, random-torque (flail) episodes, and rollouts of
#      three SAC learners of the true reward;
#   2. five rounds: the readout on 1-frame clips (configs/viscritic_small_twoframe.yaml) from the
#      round before's weights over all the data so far; SAC learns from the new critic (4 seeds);
#      its learners' rollouts, labelled by the simulator, join the data;
#   3. hindsight rollouts of the saved learners (the goal moved near where the arm went) and one
#      more readout round: critic/weights/viscritic-small-reacher-2f (<RUN>/hindsight/readout/final);
#   4. one readout round over Reacher's data beside Pusher's and Lift's at 1 frame: one checkpoint
#      for the three tasks (<RUN>/mixed/readout/final; measured, not shipped);
#   5. the shipped viscritic-small (<RUN>/pertask/readout/final): the candidate's ten learners and
#      their (hindsight) rollouts, then one round with a clip per task (Reacher 1 frame, Pusher and
#      Lift 8) in which Reacher's digit answers are distilled from the candidate while Pusher and
#      Lift learn their true labels (docs/zero_shot_rl.md, "One checkpoint, a clip per task").
# Each step is a command that ran on the 2-core CPU (2026-12-03/04); one round takes about 30 min
# there, steps 1-4 about 4.5 h, step 5 about 40 min. Figures: docs/reward_loop.md, docs/zero_shot_rl.md and the
# model cards.
#   bash scripts/train_viscritic_small_loop.sh START_MODEL [DATA_DIR] [RUN_DIR]
# PYTHON=<interpreter> runs the steps with it; by default, ${VENV:-.venv}/bin/python after
# scripts/install.sh (which skips what is already there).
set -euo pipefail
cd "$(dirname "$0")/.."
START=${1:?usage: train_viscritic_small_loop.sh START_MODEL [DATA_DIR] [RUN_DIR]}
DATA=${2:-data}
RUN=${3:-outputs/viscritic_small/loop}
if [ -z "${PYTHON:-}" ]; then
    bash scripts/install.sh
    PYTHON="${VENV:-.venv}/bin/python"
fi
PY=("$PYTHON")  # quoted wherever it runs: a path with a space stays one word
export PYTHONHASHSEED=0 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$RUN"

learners() {  # the saved policies of an RL run dir: policies=[...]
    local dir=$1 condition=$2 seeds=$3 out="" s
    for s in $seeds; do out="$out,$dir/${condition}_seed$s/policy.zip"; done
    echo "${out#,}"
}
# The loop's learners ran SAC at gamma 0.99, the experiment's default until 2026-12-05: their
# rollouts are the loop's data, so the recipe keeps that discount (the default is now 0.95).
RL_GAMMA=algo.gamma=0.99
rl() {  # rl CRITIC OUT: SAC on Reacher learns from the critic alone, seeds 0-3
    "${PY[@]}" experiments/zero_shot_rl.py conditions=[critic] critic.model="$1" seeds=[0,1,2,3] \
        "$RL_GAMMA" progress_bar=false overwrite=true hydra.run.dir="$2"  # a re-run retrains
}
readout() {  # readout FROM OUT STEPS DATA...: one round of the 1-frame readout
    local from=$1 out=$2 steps=$3
    shift 3
    local dirs
    dirs=$(IFS=,; echo "$*")
    "${PY[@]}" experiments/train_critic.py --config-name viscritic_small_twoframe model="$from" \
        stages.readout.steps="$steps" "data=[$dirs]" progress_bar=false overwrite=true hydra.run.dir="$out"
}

# 1. Reacher data: scripted, flail, and the true reward's learners
"${PY[@]}" experiments/synthesize.py env=Reacher-v5 episodes=1200 every=1 workers=2 out="$DATA/loop/Reacher-v5"
"${PY[@]}" experiments/synthesize.py env=Reacher-v5 episodes=400 failure_fraction=1.0 failures=[flail] \
    every=1 workers=2 out="$DATA/loop/flail"
"${PY[@]}" experiments/zero_shot_rl.py conditions=[ground_truth] "$RL_GAMMA" progress_bar=false \
    overwrite=true hydra.run.dir="$RUN/gt"
"${PY[@]}" experiments/synthesize.py env=Reacher-v5 episodes=100 every=1 first_seed=10000 workers=2 \
    "policies=[$(learners "$RUN/gt" ground_truth "0 1 2")]" out="$DATA/loop/gtpol"
SETS=("$DATA/loop/Reacher-v5" "$DATA/loop/flail" "$DATA/loop/gtpol")

# 2. five rounds of the loop
readout "$START" "$RUN/two1" 300 "${SETS[@]}"
rl "$RUN/two1/readout/final" "$RUN/rl1"
for N in 2 3 4 5; do
    "${PY[@]}" experiments/synthesize.py env=Reacher-v5 episodes=100 every=1 first_seed=$((10000 + 1000 * N)) \
        workers=2 "policies=[$(learners "$RUN/rl$((N - 1))" critic "0 1 2 3")]" out="$DATA/loop/policy_r$N"
    SETS+=("$DATA/loop/policy_r$N")
    readout "$RUN/two$((N - 1))/readout/final" "$RUN/two$N" 300 "${SETS[@]}"
    if [ "$N" -lt 5 ]; then rl "$RUN/two$N/readout/final" "$RUN/rl$N"; fi
done

# 3. hindsight rollouts of the 19 saved learners (true reward, rounds 1-4), one more round
POLICIES=$(learners "$RUN/gt" ground_truth "0 1 2")
for N in 1 2 3 4; do POLICIES="$POLICIES,$(learners "$RUN/rl$N" critic "0 1 2 3")"; done
"${PY[@]}" experiments/synthesize.py env=Reacher-v5 episodes=50 every=1 first_seed=20000 hindsight=true \
    workers=2 "policies=[$POLICIES]" out="$DATA/loop/hindsight"
SETS+=("$DATA/loop/hindsight")
readout "$RUN/two5/readout/final" "$RUN/hindsight" 300 "${SETS[@]}"

# 4. the three tasks in one checkpoint
"${PY[@]}" experiments/synthesize.py env=Pusher-v5 episodes=300 every=2 workers=2 out="$DATA/Pusher-v5"
"${PY[@]}" experiments/synthesize.py env=Lift episodes=240 every=2 workers=2 out="$DATA/Lift"
readout "$RUN/hindsight/readout/final" "$RUN/mixed" 400 "${SETS[@]}" "$DATA/Pusher-v5" "$DATA/Lift"

# 5. the shipped checkpoint: the candidate's learners (10 seeds), their rollouts, the distilled round
CANDIDATE="$RUN/hindsight/readout/final"
"${PY[@]}" experiments/synthesize.py env=Reacher-v5 episodes=150 every=1 first_seed=20000 hindsight=true \
    workers=2 "policies=[$(learners "$RUN/gt" ground_truth "0 1 2")]" out="$DATA/loop/hindsight_gt"
"${PY[@]}" experiments/zero_shot_rl.py conditions=[critic] critic.model="$CANDIDATE" seeds=[0,1,2,3,4,5,6,7,8,9] \
    "$RL_GAMMA" progress_bar=false overwrite=true hydra.run.dir="$RUN/rl_candidate"
LEARNERS=$(learners "$RUN/rl_candidate" critic "0 1 2 3 4 5 6 7 8 9")
"${PY[@]}" experiments/synthesize.py env=Reacher-v5 episodes=100 every=1 first_seed=16000 workers=2 \
    "policies=[$LEARNERS]" out="$DATA/loop/policy_r6"
"${PY[@]}" experiments/synthesize.py env=Reacher-v5 episodes=50 every=1 first_seed=26000 hindsight=true \
    workers=2 "policies=[$LEARNERS]" out="$DATA/loop/hindsight_r6"
REACHER="$DATA/loop/Reacher-v5,$DATA/loop/flail,$DATA/loop/gtpol,$DATA/loop/hindsight_gt"
REACHER="$REACHER,$DATA/loop/hindsight_r6,$DATA/loop/policy_r6"
"${PY[@]}" experiments/train_critic.py --config-name viscritic_small_twoframe model="$CANDIDATE" \
    teacher="$CANDIDATE" "teacher_tasks=[Reacher-v5]" frames=8 "task_frames={Reacher-v5: 1}" \
    "stages.readout.kinds=[score,frozen]" stages.readout.steps=600 \
    "data=[$REACHER,$DATA/Pusher-v5,$DATA/Lift]" "data_weights=[1,1,1,1,1,1,7,7]" \
    progress_bar=false overwrite=true hydra.run.dir="$RUN/pertask"
