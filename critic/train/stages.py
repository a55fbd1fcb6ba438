"""What each training stage trains on and with which settings: :data:`STAGES`, and
:func:`stage_plan`, which turns ``stages.<name>`` of a config into the stage's plan (its learning
rule, sample kinds, settings, and a GRPO stage's rewards) or a :class:`TrainConfigError` naming
the value and the fix. Split from ``critic/train/config.py`` (the run's whole config), which calls
it for each stage of the pipeline and re-exports these names.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from rollout.checks import is_int, is_number, list_option

# what a stage's settings may hold (GRPO stages' rewards too)
STAGE_KEYS = frozenset({"steps", "batch_size", "lr", "schedule", "warmup", "shuffle_labels", "kinds",
                        "rewards", "reward_weights"})  # fmt: skip
STAGES = {
    # stage: (learning rule, sample kinds it trains on)
    "sft": ("sft", ("sft", "score", "failure", "pretext", "joint")),
    "pretext": ("grpo", ("pretext",)),
    "joint": ("grpo", ("joint",)),
    "outcome": ("grpo", ("progress", "score", "failure")),
    # supervised, on answer-only digit samples: the one-pass readout the reward wrappers use, on
    # real clips and on clips frozen after partial progress (critic/data/samples.py); with
    # kinds=[score, frozen, failure] also the whole-episode verdict
    "readout": ("sft", ("score", "frozen", "failure")),
}
# The kinds a stage trains on when its settings name none (the readout: digit answers only).
DEFAULT_KINDS = {"readout": ("score", "frozen")}


class TrainConfigError(ValueError):
    """The training config cannot run (found before any model loads)."""


def stage_plan(cfg: DictConfig, stage: str) -> dict[str, Any]:
    """The plan of ``stage`` (a name of :data:`STAGES` in ``cfg.pipeline``) from
    ``cfg.stages[stage]``: ``rule``, ``kinds``, ``settings`` and, for a GRPO stage, ``grpo``,
    ``reward``, ``reward_names`` and (T-GRPO) ``accuracy``.

    Raises:
        TrainConfigError: the stage's settings are missing, hold a key no stage reads, or a value
            it cannot train with.
    """
    from critic.train.grpo import GRPOConfig, GRPOConfigError
    from critic.train.optim import learning_rate
    from critic.train.rewards import REWARD_KINDS, RewardConfigError, combine_rewards

    settings = cfg.stages.get(stage)
    if settings is None:
        raise TrainConfigError(f"stage {stage!r} has no settings under stages.{stage}")
    if not isinstance(settings, DictConfig):
        raise TrainConfigError(
            f"stages.{stage}={settings!r} must be a mapping of the stage's settings (steps, "
            "batch_size, lr, ...), as in configs/train_critic.yaml"
        )
    rule, kinds = STAGES[stage]
    allowed, kinds = kinds, DEFAULT_KINDS.get(stage, kinds)
    if unknown := [str(k) for k in settings if k not in STAGE_KEYS]:
        # a typo (shedule:) in a config of one's own trained on the default without a word
        raise TrainConfigError(
            f"stages.{stage} has {unknown}, which no stage reads; a stage's settings are "
            f"{sorted(STAGE_KEYS)}"
        )
    steps = settings.get("steps")
    if not is_int(steps) or steps < 1:
        raise TrainConfigError(f"stages.{stage}.steps={steps!r} must be an integer >= 1")
    lr, batch_size = settings.get("lr"), settings.get("batch_size")
    if not is_number(lr) or lr <= 0:
        raise TrainConfigError(
            f"stages.{stage}.lr={lr!r} must be a finite number > 0, e.g. stages.{stage}.lr=1.0e-4"
        )
    if not is_int(batch_size) or batch_size < 1:
        raise TrainConfigError(
            f"stages.{stage}.batch_size={batch_size!r} must be an integer >= 1 (samples per "
            "step, or completions per step in a GRPO stage)"
        )
    schedule, warmup = settings.get("schedule", "constant"), settings.get("warmup", 0)
    if not is_int(warmup):
        raise TrainConfigError(
            f"stages.{stage}: warmup={warmup!r} must be an integer in [0, steps={settings.steps})"
        )
    if not isinstance(settings.get("shuffle_labels", False), bool):
        raise TrainConfigError(
            f"stages.{stage}.shuffle_labels={settings.shuffle_labels!r} must be true or false"
        )
    try:
        learning_rate(0, settings.steps, 1.0, schedule, warmup)
    except ValueError as exc:
        raise TrainConfigError(f"stages.{stage}: {exc}") from exc
    if settings.get("kinds") is not None:  # a stage may train on a subset of its kinds
        chosen = list_option(settings.kinds)  # kinds=score: one kind
        if not chosen:
            raise TrainConfigError(
                f"stages.{stage}.kinds=[] trains on nothing; name some of {list(allowed)}, or "
                f"kinds=null for {list(kinds)}"
            )
        if twice := sorted({k for k in chosen if chosen.count(k) > 1}):
            # counted twice: the kind's samples drawn twice as often, without a word
            raise TrainConfigError(
                f"stages.{stage}.kinds names {twice} more than once; list each kind once"
            )
        extra = [k for k in chosen if k not in allowed]
        if extra:
            raise TrainConfigError(
                f"stages.{stage}.kinds has {extra}, which stage {stage!r} cannot train on; "
                f"pick from {list(allowed)}"
            )
        kinds = tuple(chosen)
    plan: dict[str, Any] = {"rule": rule, "kinds": kinds, "settings": settings}
    if rule == "grpo":
        if not isinstance(cfg.get("grpo"), DictConfig):
            raise TrainConfigError(
                f"grpo={cfg.get('grpo')!r} must be a mapping of the GRPO settings (group_size, "
                f"max_new_tokens, ...) for stage {stage!r}, as in configs/train_critic.yaml"
            )
        try:
            grpo = GRPOConfig(**OmegaConf.to_object(cfg.grpo))
        except (GRPOConfigError, TypeError) as exc:
            raise TrainConfigError(f"grpo: {exc}") from exc
        if settings.batch_size % grpo.group_size:
            raise TrainConfigError(
                f"stages.{stage}.batch_size={settings.batch_size} completions is not divisible "
                f"by grpo.group_size={grpo.group_size}; use a multiple of it"
            )
        rewards = list_option(settings.get("rewards"))  # rewards=transform: one function
        try:
            weights = settings.get("reward_weights")  # null: weight 1 each (combine_rewards)
            weights = None if weights is None else list_option(weights)
            plan["reward"] = combine_rewards(rewards, weights)
        except RewardConfigError as exc:
            raise TrainConfigError(f"stages.{stage}: {exc}") from exc
        idle = [
            name
            for name in rewards
            if isinstance(name, str)
            and REWARD_KINDS.get(name) is not None
            and not REWARD_KINDS[name] & set(kinds)
        ]
        if idle:
            raise TrainConfigError(
                f"stages.{stage}.rewards has {idle}, which score none of the stage's sample "
                f"kinds {list(kinds)} (they add nothing to its reward); "
                + "; ".join(f"{n} scores {sorted(REWARD_KINDS[n])}" for n in idle)
            )
        if grpo.temporal_bonus > 0:  # T-GRPO's "correct" reads the answers' accuracy alone
            accuracy = [
                (name, w)
                for name, w in zip(rewards, weights or [1.0] * len(rewards), strict=True)
                if name != "format" and getattr(name, "__name__", None) != "format_reward"
            ]
            if not accuracy:
                raise TrainConfigError(
                    f"stages.{stage}: grpo.temporal_bonus={grpo.temporal_bonus} counts a "
                    "completion correct by its accuracy, the rewards other than format, and "
                    f"the stage's rewards are {rewards}; add one, or set grpo.temporal_bonus=0"
                )
            plan["accuracy"] = combine_rewards([n for n, _ in accuracy], [w for _, w in accuracy])
        plan["grpo"] = grpo
        plan["reward_names"] = rewards
    return plan
