"""What a VLM critic takes from its checkpoint folder: clip lengths, failure types, the pixel
budget and the tasks it was trained on, read through VisCriticReward-v0 with a real tiny
Qwen2.5-VL (split from test_vlm.py)."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the env)
from critic import ProgressQuery, UnknownCriticError, make_critic

pytest.importorskip("transformers")
FRAMES = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)


def test_a_saved_checkpoint_directory_is_a_critic(tmp_path, tiny_model):
    from critic.models import save_model

    save_model(*tiny_model, tmp_path / "ckpt")
    env = gym.make("VisCriticReward-v0", env="Reacher-v5", critic=str(tmp_path / "ckpt"))
    env.reset(seed=0)
    _, reward, *_ = env.step(env.action_space.sample())
    assert 0.0 <= reward <= 1.0
    env.close()


def _frames_sent(critic, task: str, **options) -> tuple[int, list[int]]:
    """The reward's clip length for ``critic`` on ``task``, and the frames of the queries it sent
    over a reset and one step."""
    sent = []
    score = critic.estimate_progress

    def spy(queries):
        sent.extend(len(q.frames) for q in queries)
        return score(queries)

    critic.estimate_progress = spy
    env = gym.make("VisCriticReward-v0", env=task, critic=critic, **options)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    env.close()
    critic.estimate_progress = score
    return env.get_wrapper_attr("config").frames_per_query, sent


def _record(folder: Path, **keys) -> None:
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **keys}))


def test_the_clip_length_a_checkpoint_records_is_what_the_reward_sends(tmp_path, tiny_model):
    from critic.models import CLIP_FRAMES_KEY, save_model

    save_model(*tiny_model, tmp_path / "ckpt")
    assert make_critic(str(tmp_path / "ckpt")).clip_frames is None  # a model from elsewhere
    _record(tmp_path / "ckpt", **{CLIP_FRAMES_KEY: 2})
    critic = make_critic(str(tmp_path / "ckpt"))
    assert critic.clip_frames == 2
    assert _frames_sent(critic, "Reacher-v5") == (2, [2, 2])  # the reset query and the step's
    # asked: wins, with a word (the clip is an input the critic never saw)
    with pytest.warns(UserWarning, match=r"^frames_per_query=4: .* was trained on clips of 2 "
                      r"frames on Reacher-v5 and reads 4 as an input it never saw; leave "):  # fmt: skip
        assert _frames_sent(critic, "Reacher-v5", frames_per_query=4) == (4, [4, 4])


def test_a_critic_offers_the_failure_types_its_checkpoint_was_trained_with(tmp_path, tiny_model):
    # a checkpoint trained on a task of one's own (an expert injecting "flip") offers "flip" in
    # its failure prompts, unless told other types
    from critic.base import FAILURE_TYPES
    from critic.models import FAILURE_TYPES_KEY, save_model

    save_model(*tiny_model, tmp_path / "ckpt")
    assert make_critic(str(tmp_path / "ckpt")).failure_types == FAILURE_TYPES
    _record(tmp_path / "ckpt", **{FAILURE_TYPES_KEY: [*FAILURE_TYPES, "flip"]})
    assert make_critic(str(tmp_path / "ckpt")).failure_types == (*FAILURE_TYPES, "flip")
    asked = {"name": "vlm", "model": str(tmp_path / "ckpt"), "failure_types": ["stall"]}
    assert make_critic(asked).failure_types == ("stall",)
    asked["failure_types"] = list(FAILURE_TYPES)  # the built-in ones, asked for: not replaced
    assert make_critic(asked).failure_types == FAILURE_TYPES


def test_a_checkpoint_may_record_a_clip_length_per_task(tmp_path, tiny_model):
    from critic.models import CLIP_FRAMES_KEY, TASK_CLIP_FRAMES_KEY, save_model

    save_model(*tiny_model, tmp_path / "ckpt")
    _record(tmp_path / "ckpt", **{CLIP_FRAMES_KEY: 2, TASK_CLIP_FRAMES_KEY: {"Reacher-v5": 1}})
    critic = make_critic(str(tmp_path / "ckpt"))
    assert critic.clip_frames == 2  # every task not named reads the checkpoint's clip length
    assert [critic.clip_frames_for(t) for t in ("Reacher-v5", "Pusher-v5", None)] == [1, 2, 2]
    assert _frames_sent(critic, "Reacher-v5") == (1, [1, 1])
    assert _frames_sent(critic, "Pusher-v5") == (2, [2, 2])


def test_a_checkpoint_path_object_is_a_model(tmp_path, tiny_model):
    from critic.models import save_model

    save_model(*tiny_model, tmp_path / "ckpt")
    critic = make_critic({"name": "vlm", "model": tmp_path / "ckpt"})
    assert critic.model == str(tmp_path / "ckpt")
    # the folder itself as the critic, as gym.make(..., critic=Path(...)) gives it: it was "names
    # no critic; pass a name or path as a string"
    for spec in (tmp_path / "ckpt", {"name": tmp_path / "ckpt", "mode": "score"}):
        assert make_critic(spec).model == str(tmp_path / "ckpt")
    with pytest.raises(UnknownCriticError) as err:
        make_critic(tmp_path / "elsewhere")
    assert str(err.value).startswith(
        f"critic {tmp_path / 'elsewhere'!r} is a path but not a folder here; give a checkpoint"
    )


def _grid(critic, frames=FRAMES) -> list[int]:
    from critic.vision import frames_to_patches

    return frames_to_patches(frames, critic.vision)[1][0].tolist()


@pytest.mark.parametrize(
    ("files", "pixels", "grid"),
    [
        # transformers' Qwen2VLVideoProcessor defaults (no budget named): 128 and 768 28² tiles;
        # 64² → 336² (min area 100352 = 316.8²; ceil(64 * 4.95 / 28) * 28 = 336), 24 patches a side
        ({"video_preprocessor_config.json": {"patch_size": 14}}, (100352, 602112), [2, 24, 24]),
        ({"video_preprocessor_config.json": {"size": {"shortest_edge": 12544,
                                                      "longest_edge": 602112}}},
         (12544, 602112), [2, 8, 8]),  # 64² → 112² (ceil(64 * 1.75 / 28) * 28)
        # the image processor's min_pixels / max_pixels, as transformers falls back to them
        ({"preprocessor_config.json": {"min_pixels": 3136, "max_pixels": 12845056}},
         (3136, 12845056), [2, 4, 4]),
        # processor_config.json's nested video settings come first
        ({"processor_config.json": {"video_processor": {"min_pixels": 12544}},
          "preprocessor_config.json": {"min_pixels": 3136}}, (12544, 602112), [2, 8, 8]),
    ],
)  # fmt: skip
def test_a_checkpoint_reads_frames_at_its_own_processors_pixel_budget(
    tmp_path, tiny_model, files, pixels, grid
):
    from critic.models import save_model

    save_model(*tiny_model, tmp_path / "ckpt")
    for name, settings in files.items():
        (tmp_path / "ckpt" / name).write_text(json.dumps(settings))
    critic = make_critic(str(tmp_path / "ckpt"))
    assert (critic.vision.min_pixels, critic.vision.max_pixels) == pixels
    assert _grid(critic) == grid
    assert critic.estimate_progress([ProgressQuery("lift", frames=FRAMES)])[0].status == "ok"


def test_the_projects_presets_and_checkpoints_keep_the_projects_pixel_budget(tmp_path, tiny_model):
    from critic.models import save_model
    from critic.vision import PROJECT_PIXELS
    from critic.weights import SHIPPED

    save_model(*tiny_model, tmp_path / "ckpt")  # what the project saves: no processor config
    shipped = SHIPPED["viscritic-small"]
    assert not [p.name for p in shipped.iterdir() if "processor" in p.name]
    for name in ("tiny", str(tmp_path / "ckpt"), "viscritic-small"):
        critic = make_critic(name)
        assert (critic.vision.min_pixels, critic.vision.max_pixels) == PROJECT_PIXELS
        assert (critic.vision.min_pixels, critic.vision.max_pixels) == (3136, 1003520)
        # 64² frames → 56² (round(64 / 28) * 28), 4 patches a side: what viscritic-small trained on
        assert _grid(critic) == [2, 4, 4]


def test_a_critic_on_a_task_it_was_not_trained_on_is_said(tmp_path, tiny_model):
    # the shipped critic on a task of one's own read it without a word (docs/tasks.md)
    import warnings

    from critic.base import warn_if_untrained
    from critic.models import TRAINED_TASKS_KEY, save_model

    assert make_critic("viscritic-small").trained_tasks == ("Lift", "Pusher-v5", "Reacher-v5")
    save_model(*tiny_model, tmp_path / "ckpt")
    assert make_critic(str(tmp_path / "ckpt")).trained_tasks is None  # not recorded: no word
    _record(tmp_path / "ckpt", **{TRAINED_TASKS_KEY: ["Reacher-v5"]})
    critic = make_critic(str(tmp_path / "ckpt"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_if_untrained(critic, "Reacher-v5")
        gym.make("VisCriticReward-v0", env="Reacher-v5", critic=critic, frames_per_query=2)
    with pytest.warns(
        UserWarning, match=r"was trained on \['Reacher-v5'\], not on 'Pusher-v5': "
    ) as w:
        gym.make("VisCriticReward-v0", env="Pusher-v5", critic=critic, frames_per_query=2)
    assert w[0].filename == __file__  # the gym.make line, not gymnasium's (rollout.warn)
    with warnings.catch_warnings():  # once per critic and task
        warnings.simplefilter("error")
        warn_if_untrained(critic, "Pusher-v5")
