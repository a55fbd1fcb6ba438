"""What a zero-shot RL run is built from: the config check, the env each condition learns in
(the critic's or the oracle's reward wrapper, or the bare task with its true reward), and when
its learner trains.

Split from ``zero_shot_rl.py`` (which trains, tests and reports) along the line between setting up
a run and running it; the config check builds the task and reads the training schedule, as the
runs do, so the three live together here. ``python experiments/zero_shot_rl.py`` finds this module
beside itself (a script's folder is on ``sys.path``); the tests find it through pytest's
``pythonpath``.
"""

from __future__ import annotations

import logging
from typing import Any

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf
from rl_results import CONDITIONS, ExperimentConfigError, expand_seeds

from rollout.checks import is_int, is_number
from rollout.imports import require_package


def check_config(cfg: DictConfig) -> None:
    """Fail before anything is built when the config cannot run."""
    require_package("stable_baselines3", "rl", "zero_shot_rl.py")  # its learners
    for key, example in (("conditions", "[critic,ground_truth]"), ("seeds", "[0,1,2]")):
        if not OmegaConf.is_list(cfg.get(key)):
            raise ExperimentConfigError(
                f"{key}={cfg.get(key)!r} must be a list, e.g. {key}={example}"
            )
    cfg.seeds = expand_seeds(list(cfg.seeds))  # seeds=[0,...,9]: 0 to 9
    for key in ("relabel", "progress_bar", "overwrite", "resume"):
        if not isinstance(cfg.get(key, False), bool):
            raise ExperimentConfigError(f"{key}={cfg.get(key)!r} must be true or false")
    unknown = [c for c in cfg.conditions if c not in CONDITIONS]
    if unknown or not cfg.conditions:
        raise ExperimentConfigError(
            f"conditions={list(cfg.conditions)!r} must be a non-empty list drawn from "
            f"{list(CONDITIONS)}"
        )
    for key in (
        "total_timesteps",
        "eval_every",
        "eval_episodes",
        "n_envs",
        "workers",
        "torch_threads",
    ):
        value = cfg[key]
        if not is_int(value) or value < 1:
            raise ExperimentConfigError(f"{key}={value!r} must be an integer >= 1")
    test = cfg.get("test_episodes", 0)
    if not is_int(test) or test < 0:
        raise ExperimentConfigError(
            f"test_episodes={test!r} must be an integer >= 0 (0: no final test; success is then "
            "read from the last evaluation of the curve)"
        )
    for key in ("conditions", "seeds"):
        if twice := sorted({str(v) for v in cfg[key] if list(cfg[key]).count(v) > 1}):
            raise ExperimentConfigError(
                f"{key}={list(cfg[key])!r} names {', '.join(twice)} more than once; each "
                f"(condition, seed) run is one folder of the run dir: list each once"
            )
    if not cfg.seeds or not all(is_int(s) and 0 <= s < 2**32 for s in cfg.seeds):
        raise ExperimentConfigError(
            f"seeds={list(cfg.seeds)!r} must be a non-empty list of integers in [0, 2**32), "
            "e.g. seeds=[0,1,2]"
        )
    if test == 0 and cfg.eval_every > cfg.total_timesteps:
        raise ExperimentConfigError(
            f"test_episodes=0 and eval_every={cfg.eval_every} > total_timesteps="
            f"{cfg.total_timesteps} measure no success at all; set test_episodes >= 1 (the "
            "default 100) or eval_every <= total_timesteps"
        )
    if test > 0 and cfg.eval_every > cfg.total_timesteps:
        logging.getLogger(__name__).warning(
            "eval_every=%d > total_timesteps=%d: no point of the learning curves is measured "
            "(the report's curve columns read n/a and the plot is empty); the test of each "
            "final policy is the result. Lower eval_every for curves",
            cfg.eval_every,
            cfg.total_timesteps,
        )
    for key, fix in (
        ("reward", "the critic reward's options; leave reward out for its defaults"),
        ("env", "the task's options, e.g. env=Reacher-v5"),
    ):
        if not OmegaConf.is_dict(cfg.get(key)):
            raise ExperimentConfigError(f"{key}={cfg.get(key)!r} must be a mapping of {fix}")
    if missing := [k for k in ENV_KEYS if k not in cfg.env]:
        raise ExperimentConfigError(
            f"env has no {', '.join(missing)}: every env config gives {list(ENV_KEYS)} "
            "(null: the task's own choice), as configs/env/*.yaml do; give them back, e.g. "
            "env.horizon=null"
        )
    _check_algo_values(cfg)  # before the schedule checks below read them
    from envs.critic_reward import CriticRewardConfig

    reward = CriticRewardConfig.from_options(
        **OmegaConf.to_container(cfg.reward, resolve=True)
    )  # before any critic loads
    per_step = "relabel=false reward.between_queries=hold"  # the fix for the checks below
    # a ground-truth run alone builds no critic reward: none of these apply to it (relabel=true
    # with algo=ppo conditions=[ground_truth] was refused)
    rewarded = bool({"critic", "oracle"} & set(cfg.conditions))
    if rewarded and cfg.reward.get("between_queries") == "interpolate" and not cfg.relabel:
        raise ExperimentConfigError(
            "reward.between_queries=interpolate needs the next query's estimate, known only "
            "with relabel=true (rewards written at each episode's end); or set "
            "reward.between_queries=hold"
        )
    if rewarded and cfg.relabel and cfg.n_envs != 1:
        raise ExperimentConfigError(
            f"relabel=true trains once per episode, which SB3 allows with one env only; "
            f"n_envs={cfg.n_envs}: set n_envs=1, or per-step rewards with {per_step}"
        )
    if rewarded and cfg.relabel and "train_freq" not in cfg.algo:
        raise ExperimentConfigError(
            f"relabel=true needs an off-policy algorithm with a replay buffer (algo=sac); "
            f"{cfg.algo._target_} has none: give it per-step rewards with {per_step}"
        )
    starts = cfg.algo.get("learning_starts")
    if is_int(starts) and starts >= cfg.total_timesteps:
        logging.getLogger(__name__).warning(
            "algo.learning_starts=%d >= total_timesteps=%d: the learners never update, and every "
            "policy tested is its random start (a smoke test); lower algo.learning_starts or "
            "raise total_timesteps for a result",
            starts,
            cfg.total_timesteps,
        )
    same_schedule = cfg.get("ground_truth_per_episode", False)
    if not isinstance(same_schedule, bool):
        raise ExperimentConfigError(
            f"ground_truth_per_episode={same_schedule!r} must be true or false"
        )
    if same_schedule and ("train_freq" not in cfg.algo or cfg.n_envs != 1):
        wrong = (
            f"{cfg.algo._target_} has no replay buffer (algo=sac has)"
            if "train_freq" not in cfg.algo
            else f"n_envs={cfg.n_envs} (set n_envs=1)"
        )
        raise ExperimentConfigError(
            "ground_truth_per_episode=true trains the ground truth's learner once per episode, "
            f"which needs an off-policy algorithm and one env: {wrong}; or set "
            "ground_truth_per_episode=false"
        )
    if same_schedule and not cfg.relabel and {"critic", "oracle"} & set(cfg.conditions):
        raise ExperimentConfigError(
            "ground_truth_per_episode=true puts the ground truth's learner on the relabelled "
            "learners' schedule, once per episode, and with relabel=false the others train at "
            "every step: the schedules would differ the other way; set relabel=true, or "
            "ground_truth_per_episode=false"
        )
    updates, every = cfg.algo.get("gradient_steps"), cfg.algo.get("train_freq")
    one_step = every in (None, 1) or (
        isinstance(every, list | tuple | ListConfig) and list(every) == [1, "step"]
    )
    relabelled = cfg.relabel and {"critic", "oracle"} & set(cfg.conditions)
    if (
        relabelled
        and "ground_truth" in cfg.conditions
        and not same_schedule
        and updates != -1
        and (updates not in (None, 1) or not one_step)
    ):
        given = OmegaConf.to_container(every) if OmegaConf.is_config(every) else every
        raise ExperimentConfigError(
            f"algo.gradient_steps={updates!r} with algo.train_freq={given!r} and relabel=true: "
            "the relabelled learners train once per episode with one gradient step per env "
            "step, whatever these say, so they would change the ground truth's updates alone; "
            "leave them at 1, give algo.gradient_steps=-1, or relabel=false"
        )
    horizon = _check_env(cfg)
    by_round: dict[int, list[str]] = {}  # episodes between trainings -> the conditions
    for condition in cfg.conditions:
        if episodes := _episodes_per_training(cfg, condition):
            by_round.setdefault(episodes, []).append(str(condition))
    for episodes, conditions in sorted(by_round.items()):
        round_ = episodes * horizon  # env steps between two of their trainings
        if cfg.total_timesteps % round_:
            # SB3 stops such a learner only at the end of a round of episodes
            below = cfg.total_timesteps - cfg.total_timesteps % round_
            what, every = (
                (f"{horizon}-step episodes", "once per episode")
                if episodes == 1
                else (f"{round_}-step rounds ({episodes} episodes of {horizon} steps)",
                      f"once every {episodes} episodes")
            )  # fmt: skip
            raise ExperimentConfigError(
                f"total_timesteps={cfg.total_timesteps} is not a whole number of {what}: "
                f"{', '.join(conditions)} (trained {every}) would run {below + round_} env "
                f"steps, not the budget the report states; set total_timesteps="
                f"{below or round_} or {below + round_}"
            )
    _check_algo(cfg)
    if "critic" in cfg.conditions or "oracle" in cfg.conditions:
        from envs.vec_env import VisCriticVecEnv

        VisCriticVecEnv.check_config(reward, cfg.relabel)
    if "critic" in cfg.conditions:
        _check_critic(cfg)


# SB3 options that must be whole numbers, and the least each may be (gradient_steps may also be
# -1: as many as the env steps since the last training)
ALGO_COUNTS = {"batch_size": 1, "buffer_size": 1, "n_steps": 1, "n_epochs": 1,
               "learning_starts": 0, "gradient_steps": 1,
               "target_update_interval": 1}  # fmt: skip  # 0: a ZeroDivisionError at step one
TRAIN_FREQ_UNITS = ("step", "episode")
ENV_KEYS = ("name", "camera", "image_size", "horizon", "task_kwargs")  # configs/env/*.yaml


def _episodes_per_training(cfg: DictConfig, condition: str) -> int:
    """How many episodes ``condition``'s learner collects between trainings (relabelled: 1; a
    train_freq of ``[n, episode]``: n), or 0 where it counts steps. SB3 ends such a learner's
    run only after a whole round of n episodes, past the budget if need be."""
    freq = training_schedule(cfg, condition).get("train_freq", cfg.algo.get("train_freq"))
    episodic = isinstance(freq, list | tuple | ListConfig) and freq[1] == "episode"
    return int(freq[0]) if episodic else 0


def _train_freq_problem(value: Any) -> str | None:
    """Why ``algo.train_freq`` is not what SB3 trains with (an integer >= 1, or ``[n, unit]``),
    or None. SB3 checks it only inside ``learn()``: after the other conditions had trained."""
    if value is None:
        return None
    if is_int(value) and value >= 1:
        return None
    if (
        isinstance(value, list | tuple | ListConfig)
        and len(value) == 2
        and is_int(value[0])
        and value[0] >= 1
        and value[1] in TRAIN_FREQ_UNITS
    ):
        return None
    given = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
    return (
        f"algo.train_freq={given!r} must be an integer >= 1 (env steps between trainings) or "
        "[n, step] / [n, episode], e.g. algo.train_freq=[1,episode]"
    )


def _check_algo_values(cfg: DictConfig) -> None:
    """The learner's options, each on its own: every count a whole number in range (SB3 takes
    ``batch_size=0`` and never updates), the learning rate, ``train_freq``. Checked before the
    checks that read them together (a ``train_freq=abc`` was blamed on relabelling)."""
    if problem := _train_freq_problem(cfg.algo.get("train_freq")):
        raise ExperimentConfigError(problem)
    for key, least in ALGO_COUNTS.items():
        value = cfg.algo.get(key)
        if value is None or (key == "gradient_steps" and value == -1):
            continue
        if not is_int(value) or value < least:
            also = " (or -1: as many as the env steps between trainings)"
            raise ExperimentConfigError(
                f"algo.{key}={value!r} must be an integer >= {least}"
                + (also if key == "gradient_steps" else "")
            )
    rate = cfg.algo.get("learning_rate")
    if rate is not None and (not is_number(rate) or not 0 < rate < float("inf")):
        raise ExperimentConfigError(
            f"algo.learning_rate={rate!r} must be a number > 0, e.g. algo.learning_rate=3e-4"
        )


def _check_algo(cfg: DictConfig) -> None:
    """The algorithm built once on the true-reward env, before any run, where SB3 refuses what
    it cannot use (an AssertionError, a ValueError, a TypeError); its options each checked
    first (:func:`_check_algo_values`)."""
    import envs

    env = true_reward_env(OmegaConf.to_container(cfg.env, resolve=True), envs)
    try:
        build = hydra.utils.instantiate(cfg.algo)
        # once for each schedule the conditions train on (the ground truth's may be the config's
        # own, the relabelled learners' once per episode)
        schedules = {repr(training_schedule(cfg, c)): c for c in cfg.conditions}
        for condition in schedules.values():
            build(env=env, seed=0, **training_schedule(cfg, condition))
    except (hydra.errors.InstantiationException, AssertionError, ValueError, TypeError) as exc:
        cause = exc.__cause__ if isinstance(exc, hydra.errors.InstantiationException) else exc
        raise ExperimentConfigError(
            f"algo: {cfg.algo.get('_target_')} refuses these options ({type(cause).__name__}: "
            f"{cause}); check the algo.* overrides against its constructor"
        ) from None
    finally:
        env.close()


def _check_env(cfg: DictConfig) -> int:
    """Build the task once (its name, camera, image size, options and horizon checked by the
    task itself) and return the episode length, before any run starts."""
    import envs

    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    true_reward_env(env_cfg, envs).close()
    horizon = env_cfg["horizon"]
    return envs.get_task(env_cfg["name"]).horizon if horizon is None else int(horizon)


def _check_critic(cfg: DictConfig) -> None:
    """Say now, not after the other conditions' runs have trained, that the critic cannot load:
    a VLM critic's options and model (and an ensemble's, and each member's) are checked as
    eval_critic.py checks its critics (:func:`critic.factory.critic_spec_problem`), without
    loading (a 7B critic on a GPU node is not loaded a third time, nor held in this process
    beside the runs'); any other critic is built once here (the oracles: nothing to load)."""
    from critic.factory import critic_spec_problem

    critic = OmegaConf.to_container(cfg.critic, resolve=True)
    # the factory's name for each critic that loads a model; any other is built once here
    name = {
        "critic.vlm.VLMCritic": "vlm",
        "critic.ensemble.EnsembleCritic": "ensemble",
        # built by the factory's check, whose refusal names the option and lists the others (a
        # +critic.foo=1 was hydra's three-line InstantiationException)
        "critic.oracle.OracleCritic": "oracle",
        "critic.oracle.NoisyOracleCritic": "noisy_oracle",
    }.get(critic.get("_target_"))
    if name is None:
        hydra.utils.instantiate(cfg.critic).close()
        return
    # its options, its model (or each member's) as the critic would check them, no weights loaded
    options = {k: v for k, v in critic.items() if not k.startswith("_")}
    if problem := critic_spec_problem({"name": name, **options}):
        raise ExperimentConfigError(f"critic: {problem}")


def build_train_env(cfg: DictConfig, condition: str, seed: int):
    """The vector env a condition learns in. The stack is built in envs, in one visible place."""
    import envs
    from envs.vec_stack import make_viscritic_vec_env

    env_cfg = OmegaConf.to_container(cfg.env, resolve=True)
    if condition in ("critic", "oracle"):
        if condition == "critic":
            critic = hydra.utils.instantiate(cfg.critic)
        else:
            from critic.oracle import OracleCritic

            critic = OracleCritic()
        return make_viscritic_vec_env(
            env_cfg["name"],
            n_envs=cfg.n_envs,
            critic=critic,
            seed=seed,
            camera=env_cfg["camera"],
            image_size=env_cfg["image_size"],
            horizon=env_cfg["horizon"],
            task_kwargs=env_cfg["task_kwargs"],
            relabel=cfg.relabel,
            **OmegaConf.to_container(cfg.reward, resolve=True),
        )

    return true_reward_vec_env(env_cfg, envs, n_envs=cfg.n_envs, seed=seed)


def true_reward_vec_env(
    env_cfg: dict[str, Any], envs_module, n_envs: int, seed: int, task_state: bool = False
):
    """:func:`true_reward_env` in SB3's ``DummyVecEnv``, each env with one Monitor (its own,
    which ``make_vec_env`` adds)."""
    from stable_baselines3.common.env_util import make_vec_env

    def make_one():
        return true_reward_env(env_cfg, envs_module, task_state=task_state, monitored=False)

    return make_vec_env(make_one, n_envs=n_envs, seed=seed, monitor_kwargs=MONITOR_KWARGS)


MONITOR_KWARGS = {"info_keywords": ("is_success",)}  # the Monitor's episode info: true success


def true_reward_env(
    env_cfg: dict[str, Any], envs_module, task_state: bool = False, monitored: bool = True
):
    """The bare task with its own reward, time limit and a Monitor that records true return and
    success: what the ground-truth condition learns in and every evaluation plays. ``task_state``:
    each step's info also carries the task's privileged state now and at the episode's reset (the
    final test reads where each episode began and ended). ``monitored=False`` leaves the Monitor
    to SB3's ``make_vec_env``, which adds one (``monitor_kwargs=MONITOR_KWARGS``): a Monitor of
    its own was wrapped in a second, whose episode info had no ``is_success``."""
    import gymnasium as gym
    from stable_baselines3.common.monitor import Monitor

    from envs.tasks import check_horizon, check_task_kwargs, check_task_reward
    from envs.wrappers import TaskStateInfo

    spec = envs_module.get_task(env_cfg["name"])
    horizon = check_horizon(spec.horizon if env_cfg["horizon"] is None else env_cfg["horizon"])
    task = envs_module.make_task_env(
        env_cfg["name"],
        camera=env_cfg["camera"],
        image_size=env_cfg["image_size"],
        **check_task_kwargs(env_cfg["task_kwargs"]),
    )
    limited = gym.wrappers.TimeLimit(task, max_episode_steps=horizon)
    # a task's reward that is not a finite number, named (the learner trained on NaN without a
    # word), as the critic reward's wrappers name it
    limited = gym.wrappers.TransformReward(limited, lambda r: check_task_reward(r, task))
    inner = TaskStateInfo(limited) if task_state else limited
    return Monitor(inner, **MONITOR_KWARGS) if monitored else inner


def training_schedule(cfg: DictConfig, condition: str) -> dict[str, Any]:
    """The algorithm's options that set when a condition's learner trains.

    Relabelled rewards (VLM-RM style) come at each episode's end, so those learners train once per
    episode, with as many gradient steps as the episode had env steps. The ground truth's learner
    trains at every step as the algorithm's config says, or on the relabelled learners' schedule
    with ``ground_truth_per_episode=true``: then the two differ in the reward alone.
    """
    per_episode = (
        cfg.relabel if condition != "ground_truth" else cfg.get("ground_truth_per_episode")
    )
    if per_episode:
        return {"train_freq": (1, "episode"), "gradient_steps": -1}
    given = (cfg.get("algo") or {}).get("train_freq")
    # [1, episode] from the command line: hydra's _convert_: all makes it a list, which SB3
    # refuses ("must be an integer and not [1, 'episode']"); it takes a tuple
    return {"train_freq": tuple(given)} if isinstance(given, list | ListConfig) else {}
