"""zero_shot_rl.py's config checks: what it refuses before any run, and how it says so.

Split from test_zero_shot_rl.py (the runs themselves) along the line train_critic's tests draw:
the checks, most without a run.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.experiments.rl_runs import ROOT, rl_run

PER_STEP = ["conditions=[ground_truth]", "relabel=false", "reward.between_queries=hold"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seeds=5", "seeds=5 must be a list, e.g. seeds=[0,1,2]"),
        ("seeds=null", "seeds=None must be a list, e.g. seeds=[0,1,2]"),
        ("seeds=[3,...,1]", "seeds=[3, '...', 1]: '...' goes between two increasing integers"),
        ("seeds=[0,1,0]", "seeds=[0, 1, 0] names 0 more than once; each (condition, seed) run is one folder"),
        ("conditions=[critic,critic]", "conditions=['critic', 'critic'] names critic more than once"),
        ("seeds=[-1]", "seeds=[-1] must be a non-empty list of integers in [0, 2**32)"),
        ("seeds=[true]", "seeds=[True] must be a non-empty list of integers in [0, 2**32)"),
        ("conditions=oracle", "conditions='oracle' must be a list, e.g. conditions=[critic,ground_truth]"),
        ("conditions=null", "conditions=None must be a list, e.g. conditions=[critic,ground_truth]"),
        ("relabel=abc", "relabel='abc' must be true or false"),
        ("progress_bar=1", "progress_bar=1 must be true or false"),
        ("+reward.query_evry=5", "query_evry=5: not a reward option; the reward options are "),
        # a raw ValueError from OmegaConf
        ("reward=null", "reward=None must be a mapping of the critic reward's options; leave reward out"),
    ],
)  # fmt: skip
def test_the_config_is_checked_before_anything_is_built(override, message):
    from hydra import compose, initialize_config_dir
    from rl_results import ExperimentConfigError
    from rl_setup import check_config

    from envs import InvalidOptionError

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="zero_shot_rl", overrides=[override])
    with pytest.raises((ExperimentConfigError, InvalidOptionError)) as err:
        check_config(cfg)
    assert str(err.value).startswith(message)


def test_an_env_config_without_a_key_is_named():
    # a KeyError: 'horizon' (an env config of a user's own, an ~env.horizon)
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict
    from rl_results import ExperimentConfigError
    from rl_setup import check_config

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="zero_shot_rl")
    with open_dict(cfg):
        del cfg.env.horizon
    with pytest.raises(ExperimentConfigError, match=r"env has no horizon: every env config gives "
                       r"\['name', 'camera', 'image_size', 'horizon', 'task_kwargs'\]"):  # fmt: skip
        check_config(cfg)


def test_seeds_may_be_a_range_as_the_docs_write_them():
    from hydra import compose, initialize_config_dir
    from rl_setup import check_config

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="zero_shot_rl", overrides=["seeds=[0,...,3,10]"])
    check_config(cfg)
    assert list(cfg.seeds) == [0, 1, 2, 3, 10]


def test_an_unknown_task_option_is_a_message_before_any_run(tmp_path):
    done = rl_run(tmp_path, "+env.task_kwargs.bogus=1", "conditions=[oracle,ground_truth]")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert (
        "zero_shot_rl: InvalidOptionError: bogus=1 is not an option of the task 'Reacher-v5'"
        in (done.stderr)
    )
    assert not list(tmp_path.glob("*_seed*"))  # said before any run trained


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["test_episodes=0", "eval_every=30000"],
         "test_episodes=0 and eval_every=30000 > total_timesteps=20000 measure no success at "
         "all; set test_episodes >= 1 (the default 100) or eval_every <= total_timesteps"),
        # SB3 would run the relabelled learners to the end of their episode: 20050 steps
        (["total_timesteps=20010"],
         "total_timesteps=20010 is not a whole number of 50-step episodes: critic, oracle "
         "(trained once per episode) would run 20050 env steps, not the budget the report "
         "states; set total_timesteps=20000 or 20050"),
        (["total_timesteps=30", "conditions=[oracle]"],
         "total_timesteps=30 is not a whole number of 50-step episodes: oracle (trained once "
         "per episode) would run 50 env steps, not the budget the report states; set "
         "total_timesteps=50 or 50"),
        (["env.horizon=-5"], "horizon=-5 must be an integer >= 1 (steps per episode)"),
        (["env.horizon=0", "conditions=[ground_truth]"],
         "horizon=0 must be an integer >= 1 (steps per episode)"),
        (["env.horizon=2.5"], "horizon=2.5 must be an integer >= 1 (steps per episode)"),
        (["+reward.terminate_on_success=true"],
         "terminate_on_success=True is not available with VisCriticVecEnv"),
        # relabelled rewards (the default) and the ground truth on their schedule
        (["algo=ppo"],
         "relabel=true needs an off-policy algorithm with a replay buffer (algo=sac); "
         "stable_baselines3.PPO has none: give it per-step rewards with relabel=false "
         "reward.between_queries=hold"),
        (["n_envs=2"],
         "relabel=true trains once per episode, which SB3 allows with one env only; n_envs=2: "
         "set n_envs=1, or per-step rewards with relabel=false reward.between_queries=hold"),
        (["ground_truth_per_episode=maybe"],
         "ground_truth_per_episode='maybe' must be true or false"),
        ([*PER_STEP, "ground_truth_per_episode=true", "n_envs=2"],
         "ground_truth_per_episode=true trains the ground truth's learner once per episode, "
         "which needs an off-policy algorithm and one env: n_envs=2 (set n_envs=1); or set "
         "ground_truth_per_episode=false"),
        # the schedules would differ the other way round (the option's purpose inverted)
        (["relabel=false", "reward.between_queries=hold", "ground_truth_per_episode=true"],
         "ground_truth_per_episode=true puts the ground truth's learner on the relabelled "
         "learners' schedule, once per episode, and with relabel=false the others train at "
         "every step"),
        # a replay ratio that would change the true reward's learner alone
        (["algo.gradient_steps=4"],
         "algo.gradient_steps=4 with algo.train_freq=1 and relabel=true: the relabelled learners "
         "train once per episode with one gradient step per env step, whatever these say"),
        (["algo.train_freq=[1,episode]"],
         "algo.gradient_steps=1 with algo.train_freq=[1, 'episode'] and relabel=true: the "
         "relabelled learners train once per episode"),
        ([*PER_STEP, "ground_truth_per_episode=true", "algo=ppo"],
         "ground_truth_per_episode=true trains the ground truth's learner once per episode, "
         "which needs an off-policy algorithm and one env: stable_baselines3.PPO has no replay "
         "buffer (algo=sac has)"),
    ],
)  # fmt: skip
def test_the_task_budget_and_reward_wrapper_are_checked_before_any_run(overrides, message):
    from hydra import compose, initialize_config_dir
    from rl_results import ExperimentConfigError
    from rl_setup import check_config

    from envs import InvalidOptionError

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="zero_shot_rl", overrides=overrides)
    with pytest.raises((ExperimentConfigError, InvalidOptionError)) as err:
        check_config(cfg)
    assert str(err.value).startswith(message)


@pytest.mark.parametrize(
    "overrides",
    [["algo=ppo", "conditions=[ground_truth]"],
     ["relabel=false", "conditions=[ground_truth]"],  # between_queries=interpolate, unused
     ["n_envs=2", "conditions=[ground_truth]"]],
)  # fmt: skip
def test_a_ground_truth_run_alone_is_not_refused_for_the_critic_reward_it_does_not_build(
    overrides,
):
    # the relabelled reward's checks refused PPO and several envs on the true reward alone
    from hydra import compose, initialize_config_dir
    from rl_setup import check_config

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        check_config(compose(config_name="zero_shot_rl", overrides=overrides))


def test_a_critic_that_cannot_load_is_said_before_the_other_conditions_train(tmp_path):
    done = rl_run(tmp_path, "conditions=[ground_truth,critic]", "seeds=[0]", "workers=1",
                "critic.model=/nonexistent/ckpt")  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith(
        "zero_shot_rl: ExperimentConfigError: critic: model='/nonexistent/ckpt': there is no "
        "folder /nonexistent/ckpt on this machine; name a checkpoint folder that exists"
    )
    assert not (tmp_path / "ground_truth_seed0").exists()
    # an ensemble's members alike; the oracles are fine
    done = rl_run(tmp_path / "ens", "conditions=[ground_truth,critic]", "seeds=[0]", "workers=1",
                "critic=ensemble", "critic.members=[viscritic-small,oracle,/nowhere]")  # fmt: skip
    assert (
        "ExperimentConfigError: critic: ensemble member '/nowhere': critic '/nowhere': there is "
        "no folder /nowhere on this machine" in done.stderr
    )
    assert not (tmp_path / "ens").exists() or not list((tmp_path / "ens").glob("*_seed*"))


def test_a_budget_below_learning_starts_is_warned_of(caplog):
    from hydra import compose, initialize_config_dir
    from rl_setup import check_config

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="zero_shot_rl", overrides=["total_timesteps=300"])
    check_config(cfg)
    assert "algo.learning_starts=1000 >= total_timesteps=300: the learners never update" in (
        caplog.text
    )
    caplog.clear()
    cfg.total_timesteps = 20000
    check_config(cfg)
    assert "learning_starts" not in caplog.text
    # no curve point inside the budget: an empty plot, and matplotlib's legend warning
    cfg.eval_every = 25000
    check_config(cfg)
    assert "eval_every=25000 > total_timesteps=20000: no point of the learning curves is " \
        "measured" in caplog.text  # fmt: skip


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # SB3 took batch_size=0 and never updated: the saved actor was its initialisation
        ("algo.batch_size=0", "algo.batch_size=0 must be an integer >= 1"),
        ("algo.gradient_steps=0", "algo.gradient_steps=0 must be an integer >= 1 (or -1: as many "
                                  "as the env steps between trainings)"),
        ("algo.buffer_size=1.5", "algo.buffer_size=1.5 must be an integer >= 1"),
        # a raw AssertionError from SB3's schedule
        ("algo.learning_rate=abc", "algo.learning_rate='abc' must be a number > 0, e.g. "
                                   "algo.learning_rate=3e-4"),
        ("+algo.polcy_kwargs={}", "algo: stable_baselines3.SAC refuses these options (TypeError: "
                                  "SAC.__init__() got an unexpected keyword argument "
                                  "'polcy_kwargs'); check the algo.* overrides against its "
                                  "constructor"),
        # SB3 checks these inside learn(): the ground truth's runs failed after the others
        # trained (an AssertionError, a ZeroDivisionError at the first gradient step)
        ("algo.train_freq=0", "algo.train_freq=0 must be an integer >= 1 (env steps between "
                              "trainings) or [n, step] / [n, episode], e.g. "
                              "algo.train_freq=[1,episode]"),
        ("algo.train_freq=[1,epsiode]", "algo.train_freq=[1, 'epsiode'] must be an integer >= 1 "
                                        "(env steps between trainings) or [n, step] / [n, "
                                        "episode], e.g. algo.train_freq=[1,episode]"),
        ("+algo.target_update_interval=0", "algo.target_update_interval=0 must be an integer >= 1"),
    ],
)  # fmt: skip
# the default conditions too: a relabelled critic beside the ground truth had a train_freq=0 blamed
# on relabelling ("algo.gradient_steps=1 with algo.train_freq=0 and relabel=true: ...")
@pytest.mark.parametrize(
    "conditions", ["conditions=[ground_truth]", "conditions=[oracle,ground_truth]"]
)
def test_bad_algorithm_options_are_refused_before_any_run(override, message, conditions):
    from hydra import compose, initialize_config_dir
    from rl_results import ExperimentConfigError
    from rl_setup import check_config

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("zero_shot_rl", overrides=[conditions, override])
    with pytest.raises(ExperimentConfigError) as err:
        check_config(cfg)
    assert str(err.value) == message


def test_a_train_freq_in_episodes_from_the_command_line_is_the_tuple_sb3_takes():
    # hydra's _convert_: all made [1, episode] a list, which SB3 refused inside learn() ("must
    # be an integer and not [1, 'episode']"), after the other conditions had trained
    from hydra import compose, initialize_config_dir
    from rl_results import ExperimentConfigError
    from rl_setup import check_config, training_schedule

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("zero_shot_rl", overrides=["conditions=[ground_truth]",
                                                 "algo.train_freq=[2,episode]"])  # fmt: skip
    assert training_schedule(cfg, "ground_truth") == {"train_freq": (2, "episode")}
    # trained every 2 episodes: SB3 ends it after a whole round of 2, past the budget if need be
    cfg.total_timesteps = 20050
    with pytest.raises(ExperimentConfigError) as err:
        check_config(cfg)
    assert str(err.value) == (
        "total_timesteps=20050 is not a whole number of 100-step rounds (2 episodes of 50 "
        "steps): ground_truth (trained once every 2 episodes) would run 20100 env steps, not the "
        "budget the report states; set total_timesteps=20000 or 20100"
    )
    cfg.total_timesteps = 20000
    check_config(cfg)


def test_the_critic_s_options_are_refused_before_the_other_conditions_train(tmp_path):
    # a mode typo, a bad device or a folder that is no checkpoint was said only when the critic's
    # run began, after the true reward's and the oracle's runs had trained
    from hydra import compose, initialize_config_dir
    from rl_results import ExperimentConfigError
    from rl_setup import check_config

    folder = tmp_path / "not_a_checkpoint"
    folder.mkdir()
    shipped = ROOT / "critic" / "weights" / "viscritic-small"
    qwen2_vl, no_tokenizer, no_template = (tmp_path / n for n in ("q2", "no_tok", "no_template"))
    for made in (qwen2_vl, no_tokenizer, no_template):  # the small files; weights are not read
        made.mkdir()
        for name in (
            "config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "chat_template.jinja",
        ):
            if (shipped / name).is_file():
                shutil.copy(shipped / name, made / name)
    config = json.loads((qwen2_vl / "config.json").read_text())
    (qwen2_vl / "config.json").write_text(json.dumps({**config, "model_type": "qwen2_vl"}))
    (no_tokenizer / "tokenizer.json").unlink()
    (no_template / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer_config = json.loads((no_template / "tokenizer_config.json").read_text())
    tokenizer_config.pop("chat_template", None)
    (no_template / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    for override, message in [
        ("critic.mode=scor", "critic: mode='scor' is not a critic mode; pick one of ['score', "
                             "'reason']"),
        ("critic.device=gpu", "critic: device='gpu' is not a device; use cpu, cuda or cuda:<index>"),
        (f"critic.model={folder}", f"critic: model='{folder}' is a folder but not a checkpoint (it "
                                   "holds no config.json); name the folder that holds the model's "
                                   "config.json and weights (a training run's is "
                                   "<run>/<stage>/final), or a shipped critic (['viscritic-small'])"),
        ("+critic.sample=4", "critic: sample: not an option of the VLM critic; its options are "
                             "['cache', 'device', 'failure_types', 'max_batch', 'max_new_tokens', "
                             "'mode', 'model', 'needs_frames', 'prompt', 'samples', 'seed', "
                             "'temperature', 'timeout_s']"),
        # a checkpoint of another model, or one without its tokenizer: said when the critic's
        # run began, hours of other conditions later on a GPU node
        (f"critic.model={qwen2_vl}", f"critic: {qwen2_vl} is a 'qwen2_vl' model; VisCritic critics "
                                     "are Qwen2.5-VL or Qwen3-VL checkpoints (model_type "
                                     "'qwen2_5_vl', 'qwen3_vl' or 'qwen3_vl_moe')"),
        (f"critic.model={no_tokenizer}", f"critic: {no_tokenizer} has no tokenizer files "
                                         "(tokenizer.json, vocab.json, tokenizer.model); save the "
                                         "tokenizer beside the weights (tokenizer.save_pretrained) "
                                         "or export a training run's checkpoint with python -m "
                                         "critic.weights export"),
        (f"critic.model={no_template}", f"critic: {no_template} has no chat template "
                                        "(chat_template.jinja, or one in tokenizer_config.json): a "
                                        "critic builds its prompts with it; save the processor's or "
                                        "tokenizer's files beside the weights"),
    ]:  # fmt: skip
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            cfg = compose("zero_shot_rl", overrides=[override])
        with pytest.raises(ExperimentConfigError) as err:
            check_config(cfg)
        assert str(err.value) == message


@pytest.mark.parametrize(
    ("critic", "message"),
    [
        ("oracle", "critic: foo=1: not an option of the 'oracle' critic; its options are "
                   "['needs_frames']"),
        ("noisy_oracle", "critic: foo=1: not an option of the 'noisy_oracle' critic; its options "
                         "are ["),
    ],
)  # fmt: skip
def test_an_oracle_s_stray_option_is_named_with_the_options_it_takes(critic, message):
    # it was hydra's InstantiationException, in three lines, with no options listed
    from hydra import compose, initialize_config_dir
    from rl_results import ExperimentConfigError
    from rl_setup import check_config

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("zero_shot_rl", overrides=[f"critic={critic}", "+critic.foo=1"])
    with pytest.raises(ExperimentConfigError) as err:
        check_config(cfg)
    assert str(err.value).startswith(message)


def test_an_empty_run_dir_is_refused_not_taken_for_the_current_folder():
    # hydra.run.dir=$RUN with RUN unset: the run trained into the repository's root
    from tests.experiments.rl_runs import rl_cli

    done = rl_cli("hydra.run.dir=")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().endswith(
        "zero_shot_rl: RunDirError: hydra.run.dir='' is empty; give a folder for the run's "
        "outputs, e.g. hydra.run.dir=outputs/<name>"
    )
    assert not (ROOT / ".hydra").exists() and not (ROOT / "critic_seed0").exists()


def test_the_true_reward_s_learner_is_not_given_a_reward_that_is_not_a_number():
    # the ground-truth learner (and every evaluation) took a task's NaN reward without a word
    import math

    import gymnasium as gym
    from rl_setup import true_reward_env

    import envs
    from envs import TaskContractError
    from envs.mujoco_tasks import ReacherTask

    class NaNReward(ReacherTask):
        def step(self, action):
            obs, _, terminated, truncated, info = super().step(action)
            return obs, math.nan, terminated, truncated, info

    from envs.tasks import _TASKS, bare_env_id

    spec = envs.get_task("Reacher-v5")
    envs.register_task(envs.TaskSpec(**{**vars(spec), "name": "NaNReward-v1", "make": NaNReward}))
    try:
        env = true_reward_env({"name": "NaNReward-v1", "camera": None, "image_size": None,
                               "horizon": None, "task_kwargs": {}}, envs)  # fmt: skip
        env.reset(seed=0)
        with pytest.raises(TaskContractError, match=r"NaNReward-v1 \(NaNReward\): its step\(\) "
                           r"returned reward nan"):  # fmt: skip
            env.step(env.action_space.sample())
        env.close()
    finally:  # the other tests' tasks as they were
        del _TASKS["NaNReward-v1"]
        gym.registry.pop(bare_env_id("NaNReward-v1"), None)
