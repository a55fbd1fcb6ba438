"""Every hydra config composes and every _target_ resolves, without building anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf

import envs

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
EXPERIMENTS = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
GROUPS = {g.name: sorted(p.stem for p in g.glob("*.yaml")) for g in CONFIGS.iterdir() if g.is_dir()}


def _targets(node) -> list[str]:
    found = []
    if isinstance(node, DictConfig):
        for key, value in node.items_ex(resolve=False):
            if key == "_target_":
                found.append(value)
            else:
                found += _targets(value)
    elif OmegaConf.is_list(node):
        for value in node:
            found += _targets(value)
    return found


def test_there_is_something_to_compose():
    assert "zero_shot_rl" in EXPERIMENTS
    assert {"env", "critic", "algo"} <= set(GROUPS)


def _cases() -> list[tuple[str, list[str]]]:
    # Each experiment alone, then with every option of each group its defaults list names.
    cases = []
    for experiment in EXPERIMENTS:
        cases.append((experiment, []))
        defaults = OmegaConf.load(CONFIGS / f"{experiment}.yaml").get("defaults", [])
        groups = [next(iter(d)) for d in defaults if isinstance(d, DictConfig)]
        cases += [(experiment, [f"{g}={o}"]) for g in groups for o in GROUPS.get(g, [])]
    return cases


@pytest.mark.parametrize(("experiment", "overrides"), _cases())
def test_every_experiment_composes_with_every_group_option(experiment, overrides):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name=experiment, overrides=overrides)
    OmegaConf.resolve(cfg)
    for target in _targets(cfg):
        assert callable(get_object(target)), target


@pytest.mark.parametrize("option", GROUPS["env"])
def test_env_configs_name_registered_tasks(option):
    cfg = OmegaConf.load(CONFIGS / "env" / f"{option}.yaml")
    assert cfg.name in envs.task_names()


@pytest.mark.parametrize("algo", GROUPS["algo"])
def test_algo_overrides_reach_sb3_as_plain_python(algo):
    # SB3 asserts net_arch is a list or dict: hydra's ListConfig used to fail there.
    import gymnasium as gym
    import hydra

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="zero_shot_rl",
                      overrides=[f"algo={algo}", "+algo.policy_kwargs={net_arch: [8, 8]}"])  # fmt: skip
    model = hydra.utils.instantiate(cfg.algo)(env=gym.make("Pendulum-v1"), seed=0)
    assert model.policy_kwargs["net_arch"] == [8, 8]
