"""The view a checkpoint's tasks were recorded at (``viscritic_task_views``): recorded by training
from its data folders' manifests, read by the critic, and held against the env it rewards (an
``image_size=`` or ``camera=`` of the env's own was taken without a word, and the shipped
critic reads 0.25 of a Reacher start at 112², where it reads 0.02 at 56², true progress 0)."""

from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import numpy as np
from omegaconf import OmegaConf

from critic.data.episodes import Episode, write_episode

REACHER_VIEW = {
    "image_size": [56, 56],
    "camera": [{"lookat": [0.0, 0.0, 0.0], "distance": 0.75, "azimuth": 90.0, "elevation": -90.0}],
}


def _folder(root, task: str, view: dict | None, seed: int = 0):
    t = 6
    episode = Episode(
        f"{task}-{seed}", task, "Do it.",
        {"view": np.random.default_rng(seed).integers(0, 256, (t, 28, 28, 3), dtype=np.uint8)},
        np.linspace(0, 1, t, dtype=np.float32), np.arange(t), True, None, None, 10.0, seed,
    )  # fmt: skip
    write_episode(episode, root)
    if view is not None:  # as envs.manifest writes it, beside the other recording options
        tasks = {task: {"every": 1, **view, "codec": "ffv1"}}
        (root / "manifest.json").write_text(json.dumps({"about": "...", "tasks": tasks}))
    return str(root)


def test_training_records_each_task_s_view_from_its_folders(tmp_path):
    from critic.train.draws import record_draws

    bigger = {**REACHER_VIEW, "image_size": [112, 112]}
    same = [_folder(tmp_path / "a", "Reacher-v5", REACHER_VIEW),
            _folder(tmp_path / "b", "Reacher-v5", REACHER_VIEW, seed=1),
            _folder(tmp_path / "c", "Lift", {"image_size": [128, 128], "camera": ["agentview"]})]  # fmt: skip
    cfg = OmegaConf.create({"data": same, "frames": 2, "held_out_tasks": [], "task_frames": {}})
    config = SimpleNamespace()
    record_draws(config, cfg)
    assert config.viscritic_task_views == {
        "Reacher-v5": REACHER_VIEW,
        "Lift": {"image_size": [128, 128], "camera": ["agentview"]},
    }
    # two views of one task, or a folder without a manifest: no view to hold an env to; a task
    # only the starting checkpoint was trained on keeps the view it recorded
    mixed = [same[0], _folder(tmp_path / "d", "Reacher-v5", bigger, seed=2),
             _folder(tmp_path / "e", "Lift", None)]  # fmt: skip
    config = SimpleNamespace(viscritic_task_views={"Pusher-v5": {"image_size": [96, 96],
                                                                 "camera": ["top"]}})  # fmt: skip
    record_draws(config, OmegaConf.merge(cfg, {"data": mixed}))
    assert config.viscritic_task_views == {"Pusher-v5": {"image_size": [96, 96], "camera": ["top"]}}
    # a manifest from before 2026-12-05 (the task's own camera written as null): no view, where
    # one of camera None warned of every env, the task's own view included
    older = [_folder(tmp_path / "f", "Reacher-v5", {**REACHER_VIEW, "camera": None}, seed=3)]
    config = SimpleNamespace()
    record_draws(config, OmegaConf.merge(cfg, {"data": older}))
    assert config.viscritic_task_views == {}
    # a held-out task is not trained: none recorded
    config = SimpleNamespace()
    record_draws(config, OmegaConf.merge(cfg, {"held_out_tasks": ["Lift"]}))
    assert set(config.viscritic_task_views) == {"Reacher-v5"}


def test_an_env_at_another_view_than_the_critic_s_is_warned_of(monkeypatch):
    import gymnasium as gym

    import envs
    import envs.render
    from critic.factory import make_critic
    from envs.vec_stack import make_viscritic_vec_env

    monkeypatch.setattr(envs.render, "_WARNED_VIEW", set())  # another test's warnings
    critic = make_critic("viscritic-small")
    assert critic.trained_views["Reacher-v5"] == REACHER_VIEW  # the shipped record

    def said(**options) -> list[str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gym.make("VisCriticReward-v0", env="Reacher-v5", critic=critic, **options).close()
        return [str(w.message) for w in caught if "readings may mean" in str(w.message)]

    assert said() == []  # the task's own view, named or not
    assert said(image_size=56) == []
    assert said(image_size=112) == [
        "critic 'vlm:viscritic-small:score' reads Reacher-v5 rendered 112x112 pixels where it was "
        "trained on 56x56: its readings may mean little there; leave image_size= and camera= at "
        "the task's, or record episodes at this view (synthesize.py env.image_size=, env.camera=) "
        "and train a critic on them"
    ]
    assert said(image_size=112) == []  # once per critic, task and view
    (camera,) = said(camera=envs.FreeCamera(lookat=(0, 0, 0), distance=2.0))
    assert camera.startswith(
        "critic 'vlm:viscritic-small:score' reads Reacher-v5 rendered from camera [{'lookat': "
        "[0.0, 0.0, 0.0], 'distance': 2.0, 'azimuth': 90.0, 'elevation': -90.0}] where it was "
        "trained from [{"
    )
    with warnings.catch_warnings(record=True) as caught:  # the vector env's stack alike
        warnings.simplefilter("always")
        make_viscritic_vec_env("Reacher-v5", 1, critic, image_size=64).close()
    assert [str(w.message) for w in caught if "rendered 64x64 pixels" in str(w.message)]
    # a checkpoint that records no view (one from before the record, a model from elsewhere)
    critic.trained_views = {}
    assert said(image_size=96) == []


def test_evaluation_on_episodes_recorded_at_another_view_is_warned_of(tmp_path, monkeypatch):
    # eval_critic.py scored the shipped critic on 64² Reacher episodes (the first rounds' data)
    # without a word
    from recordings import views_warned

    import envs.render
    from critic.factory import make_critic

    monkeypatch.setattr(envs.render, "_WARNED_VIEW", set())
    critic = make_critic("viscritic-small")
    own = _folder(tmp_path / "own", "Reacher-v5", REACHER_VIEW)
    small = _folder(tmp_path / "small", "Reacher-v5", {**REACHER_VIEW, "image_size": [64, 64]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        views_warned(critic, [own, small, str(tmp_path / "no manifest")], {"Reacher-v5": []})
        views_warned(critic, [small], {"Lift": []})  # not a task it scores: nothing
    assert [str(w.message) for w in caught] == [
        f"critic 'vlm:viscritic-small:score' reads the Reacher-v5 episodes of {small}, recorded "
        "64x64 pixels where it was trained on 56x56: its readings may mean little there; score "
        "it on episodes recorded at its view (synthesize.py with env.image_size= and env.camera= "
        "left at the task's)"
    ]
