"""experiments/train_critic.py's data options on a tiny model and dataset: how much each data
folder is drawn (data_weights), a clip length per task (task_frames), and a teacher's labels
(teacher, teacher_tasks, teacher_data)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.experiments.train_critic_cli import (
    TINY,
    check_overrides,
    load_recipe,
    read_history,
    run_stages,
    run_train,
)


@pytest.mark.parametrize(
    ("weights", "shown"),
    [("[1,3]", "[1, 3]"), ("[0]", "[0]"), ("[true]", "[True]"), ("[-2]", "[-2]"), ("2", "2")],
)
def test_data_weights_need_one_positive_number_per_folder(dataset, weights, shown):
    with pytest.raises(Exception) as err:
        check_overrides(f"data=[{dataset}]", f"data_weights={weights}")
    assert type(err.value).__name__ == "TrainConfigError"
    assert str(err.value) == (
        f"data_weights={shown} needs one positive number per data folder (1: ['{dataset}']), e.g. "
        "data_weights=[3] draws the last folder's samples three times as often; "
        "data_weights=null draws every sample alike"
    )


def test_data_weights_set_each_folders_share_of_the_draws(dataset, tmp_path):
    import shutil

    from critic.train.draws import draw_probabilities, load_samples

    twin = tmp_path / "twin"  # the same episodes as a second folder: equal sample counts (a
    shutil.copytree(dataset, twin)  # link to it is refused: the same folder twice)
    _, cfg = load_recipe(f"data=[{dataset},{twin}]", "data_weights=[1,3]", *TINY)
    train = load_samples(cfg, ("score", "frozen"), "train")  # the readout stage's kinds
    folders = [s.meta["data_folder"] for s in train]
    assert folders.count(0) == folders.count(1) > 0
    chance, shares = draw_probabilities(cfg, train)
    # n samples per folder, weights 1 and 3: each sample of the first 1/(4n), of the second 3/(4n)
    n = folders.count(0)
    assert chance == pytest.approx([1 / (4 * n) if f == 0 else 3 / (4 * n) for f in folders])
    assert shares == pytest.approx({str(dataset): 0.25, str(twin): 0.75})
    import critic.data.episodes

    read, decoded = critic.data.episodes.read_episode, []  # only the split's episodes decoded
    with pytest.MonkeyPatch.context() as patch:  # (every episode was, then most dropped)
        patch.setattr(critic.data.episodes, "read_episode",
                      lambda root, i, *a: decoded.append(read(root, i, *a)) or decoded[-1])  # fmt: skip
        val = load_samples(cfg, ("score", "frozen"), "val", limit=5)  # shared out: 3 + 2
    assert [s.meta["data_folder"] for s in val] == [0, 0, 0, 1, 1]
    from critic.data.samples import seed_split

    assert decoded and {seed_split(e.seed) for e in decoded} == {"val"}
    picks = np.random.default_rng(0).choice(len(train), size=4000, p=chance)
    assert np.mean([folders[i] for i in picks]) == pytest.approx(0.75, abs=0.03)
    cfg.data_weights = None  # unweighted: uniform draws, the chances left to numpy
    assert draw_probabilities(cfg, train) == (
        None,
        pytest.approx({str(dataset): 0.5, str(twin): 0.5}),
    )
    run = tmp_path / "run"
    done = run_train(
        run,
        f"data=[{dataset},{twin}]",
        "data_weights=[1,3]",
        "pipeline=[readout]",
        "stages.readout.steps=1",
        "stages.readout.batch_size=2",
        "eval_every=1",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    start = read_history(run)[0]
    assert start["step"] == 0 and start["train_samples"] == len(train)
    assert start[f"data_share/{twin}"] == pytest.approx(0.75)


def test_a_folder_that_gives_no_train_samples_is_named_not_left_out(dataset, tmp_path):
    # with another folder to draw from, it was dropped without a word, its data_weights share
    # going to the other (a synthesize killed in its first episode leaves such a folder)
    from critic.train.config import TrainConfigError
    from critic.train.draws import load_samples

    empty = tmp_path / "empty"
    (empty / "episodes").mkdir(parents=True)
    _, cfg = load_recipe(f"data=[{dataset},{empty}]", "data_weights=[1,3]", *TINY)
    with pytest.raises(TrainConfigError) as err:
        load_samples(cfg, ("score", "frozen"), "train")
    assert str(err.value) == (
        f"data[1]={empty} gives no train samples (data_weights gives it 3): of its 0 episodes, "
        "0 are of tasks not held out and none of those is in the train split (episodes are split "
        "by seed, about 80 % train, 10 % val and 10 % test: critic.data.samples.seed_split); "
        "record more there with other first_seed=; or leave it out of data="
    )
    assert load_samples(cfg, ("score", "frozen"), "val", limit=4)  # val may come from one
    # a folder of held-out tasks alone is left out as asked (here both: the recipe says so)
    import shutil

    shutil.copytree(dataset, tmp_path / "copy")
    _, cfg = load_recipe(f"data=[{dataset},{tmp_path / 'copy'}]", "held_out_tasks=[Reacher-v5]",
                         *TINY)  # fmt: skip
    assert load_samples(cfg, ("score", "frozen"), "train") == []


@pytest.mark.parametrize(
    ("value", "shown"),
    [("{Reacher-v5: 0}", "{'Reacher-v5': 0}"), ("{Reacher-v5: true}", "{'Reacher-v5': True}"),
     ("3", "3"), ("[1]", "[1]")],
)  # fmt: skip
def test_task_frames_need_a_mapping_of_positive_integers(dataset, value, shown):
    with pytest.raises(Exception) as err:
        check_overrides(f"data=[{dataset}]", f"task_frames={value}")
    assert type(err.value).__name__ == "TrainConfigError"
    assert str(err.value) == (
        f"task_frames={shown} needs a mapping of task name to frames per clip (an integer >= 1), "
        "e.g. 'task_frames={Reacher-v5: 1}' trains Reacher's clips at one frame and every other "
        "task's at frames=; task_frames={} uses frames= for all"
    )


def test_task_frames_set_a_task_s_clip_and_travel_with_the_checkpoint(dataset, tmp_path):
    from critic.factory import make_critic
    from critic.train.draws import load_samples

    def clip_lengths(cfg) -> set[int]:  # anchored prompts: initial image, the clip, current image
        return {
            s.prompt.videos[1].shape[0] for s in load_samples(cfg, ("score", "frozen"), "train")
        }

    _, cfg = load_recipe(f"data=[{dataset}]", "task_frames={Reacher-v5: 1}", *TINY)  # frames=2
    assert clip_lengths(cfg) == {1}
    cfg.task_frames = {"Lift": 1}  # another task: Reacher's episodes keep frames=
    assert clip_lengths(cfg) == {2}
    first, second = tmp_path / "first", tmp_path / "second"
    one_step = ["pipeline=[readout]", "stages.readout.steps=1", "stages.readout.batch_size=2",
                "eval_every=0"]  # fmt: skip
    done = run_train(first, f"data=[{dataset}]", "task_frames={Reacher-v5: 1}", *one_step)
    assert done.returncode == 0, done.stderr[-3000:]
    critic = make_critic(str(first / "readout" / "final"))
    assert critic.clip_frames == 2
    assert [critic.clip_frames_for(t) for t in ("Reacher-v5", "Lift")] == [1, 2]
    critic.close()
    # a run from it without task_frames records its own clips, not the starting checkpoint's
    done = run_train(second, f"data=[{dataset}]", f"model={first / 'readout' / 'final'}", *one_step)
    assert done.returncode == 0, done.stderr[-3000:]
    assert make_critic(str(second / "readout" / "final")).clip_frames_for("Reacher-v5") == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["teacher=/nonexistent/ckpt"], "teacher='/nonexistent/ckpt' is not a checkpoint folder or a "
         "shipped critic (['viscritic-small']); give the folder of the critic whose readout to distil"),
        (["teacher=viscritic-small", "teacher_tasks=Reacher-v5"], "teacher_tasks='Reacher-v5' needs a "
         "list of task names, e.g. teacher_tasks=[Reacher-v5]; null: every task"),
        (["teacher_tasks=[Reacher-v5]"], "teacher_tasks=['Reacher-v5'] has no teacher; set "
         "teacher=<checkpoint folder>"),
        (["teacher=viscritic-small", "teacher_tasks=[]"], "teacher_tasks=[] needs a list of task "
         "names, e.g. teacher_tasks=[Reacher-v5]; null: every task"),
    ],
)  # fmt: skip
def test_teacher_configs_fail_before_any_model_loads(dataset, overrides, message):
    with pytest.raises(Exception) as err:
        check_overrides(f"data=[{dataset}]", *overrides)
    assert type(err.value).__name__ == "TrainConfigError"
    assert str(err.value) == message


def test_a_teacher_labels_its_tasks_with_its_own_readout(dataset, tmp_path, tiny_model):
    from critic.base import ProgressQuery
    from critic.data.episodes import iter_episodes
    from critic.factory import make_critic
    from critic.models import save_model
    from critic.train.draws import label_with_teacher, load_samples

    save_model(*tiny_model, tmp_path / "teacher")
    _, cfg = load_recipe(
        f"data=[{dataset}]", f"teacher={tmp_path / 'teacher'}", "teacher_tasks=[Reacher-v5]", *TINY
    )
    train = load_samples(cfg, ("score", "frozen"), "train")
    assert label_with_teacher(cfg, train) == len(train) > 0
    teacher = make_critic(str(tmp_path / "teacher"))
    instructions = {e.episode_id: e.instruction for e in iter_episodes(dataset)}
    for sample in train[:4]:  # the reading the teacher gives the same query as a reward
        initial, clip, current = sample.prompt.videos
        query = ProgressQuery(instructions[sample.episode_id], clip, initial_frame=initial[0],
                              current_frame=current[0])  # fmt: skip
        probs = np.asarray(sample.target["digit_probs"])
        assert probs.sum() == pytest.approx(1.0) and probs.std() > 0
        expected = teacher.estimate_progress([query])[0].progress
        assert probs @ (np.arange(10) / 9) == pytest.approx(expected, abs=1e-5)
    teacher.close()
    cfg.teacher_tasks = ["Lift"]  # another task: nothing labelled
    assert label_with_teacher(cfg, load_samples(cfg, ("score", "frozen"), "train")) == 0
    run = tmp_path / "run"
    done = run_train(
        run,
        f"data=[{dataset}]",
        f"teacher={tmp_path / 'teacher'}",
        "pipeline=[readout]",
        "stages.readout.kinds=[score,frozen,failure]",
        "stages.readout.steps=2",
        "stages.readout.batch_size=4",
        "eval_every=2",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    start, last = read_history(run)[0], read_history(run)[-1]
    # teacher_tasks null: every digit answer; the verdicts (one per episode) keep their labels
    assert 0 < start["teacher_samples"] < start["train_samples"]
    assert np.isfinite(last["loss"]) and last["loss"] > 0


def test_a_format_only_stage_is_not_taught_the_teacher_s_readings(dataset, tmp_path, tiny_model):
    # shuffle_labels: answers permuted across samples, so the stage teaches the format alone; the
    # teacher's soft targets (which SFT trains on in place of the answer) taught the real readings
    from critic.models import save_model

    save_model(*tiny_model, tmp_path / "teacher")
    run = tmp_path / "run"
    done = run_train(
        run,
        f"data=[{dataset}]",
        f"teacher={tmp_path / 'teacher'}",
        "pipeline=[sft,readout]",
        "stages.sft.shuffle_labels=true",
        "stages.sft.kinds=[score]",
        "stages.sft.steps=1",
        "stages.sft.batch_size=2",
        "stages.readout.steps=1",
        "stages.readout.batch_size=2",
        "eval_every=1",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    starts = {row["stage"]: row for row in read_history(run) if row["step"] == 0}
    assert starts["sft"]["teacher_samples"] == 0 and starts["readout"]["teacher_samples"] > 0
    # a teacher whose only stage is format-only would label nothing: refused before it runs
    with pytest.raises(Exception, match=r"no stage of pipeline=\['readout'\] trains on them"):
        check_overrides(f"data=[{dataset}]", "teacher=viscritic-small", "pipeline=[readout]",
                        "+stages.readout.shuffle_labels=true")  # fmt: skip


def test_teacher_data_labels_only_the_folders_it_names(dataset, tmp_path, tiny_model):
    import shutil

    from critic.models import save_model
    from critic.train.draws import label_with_teacher, load_samples

    twin = tmp_path / "twin"
    shutil.copytree(dataset, twin)  # a copy: a link to it is the same folder twice
    save_model(*tiny_model, tmp_path / "teacher")
    _, cfg = load_recipe(
        f"data=[{dataset},{twin}]",
        f"teacher={tmp_path / 'teacher'}",
        f"teacher_data=[{twin}]",
        *TINY,
    )
    train = load_samples(cfg, ("score", "frozen"), "train")
    taught = label_with_teacher(cfg, train)
    assert taught == sum(s.meta["data_folder"] == 1 for s in train) > 0
    assert all(("digit_probs" in s.target) == (s.meta["data_folder"] == 1) for s in train)
    for overrides, message in [
        ([f"teacher_data=[{tmp_path / 'other'}]"],
         f"teacher_data=['{tmp_path / 'other'}'] needs a non-empty list of data folders, each "
         f"written as in data= (['{dataset}', '{twin}']); ['{tmp_path / 'other'}'] are not among "
         "them; null: the teacher labels every folder"),
        (["teacher_data=[]"], "teacher_data=[] needs a non-empty list of data folders"),
        ([f"teacher_data={twin}"], f"teacher_data='{twin}' needs a non-empty list"),
    ]:  # fmt: skip
        with pytest.raises(Exception) as err:
            check_overrides(f"data=[{dataset},{twin}]", "teacher=viscritic-small", *overrides)
        assert type(err.value).__name__ == "TrainConfigError"
        assert str(err.value).startswith(message)
    with pytest.raises(Exception, match=r"teacher_data=\[.*\] has no teacher; set teacher="):
        check_overrides(f"data=[{dataset},{twin}]", f"teacher_data=[{twin}]")


def test_each_grpo_stage_draws_its_own_clips(dataset, tmp_path, monkeypatch):
    # both stages drew from the run's seed, and pretext and joint samples consume it alike: the
    # joint stage replayed the pretext stage's windows and transforms, clip for clip
    import critic.train.recipe
    from critic.train.draws import load_samples

    module, cfg = load_recipe(
        f"data=[{dataset}]", *TINY, "pipeline=[pretext,joint]", "stages.pretext.steps=1",
        "stages.joint.steps=1", "stages.pretext.batch_size=4", "stages.joint.batch_size=4",
        "eval_every=0", "checkpoint_every=0",
    )  # fmt: skip

    def clips(samples):
        return [(s.episode_id, s.meta["window"], s.target["transform"]) for s in samples]

    drawn = {}

    def recording(cfg, kinds, split, limit=None, stream=None):
        samples = load_samples(cfg, kinds, split, limit, stream)
        if split == "train":
            drawn[tuple(kinds)] = clips(samples)
        return samples

    monkeypatch.setattr(critic.train.recipe, "load_samples", recording)
    trainer = module.Trainer(cfg, tmp_path)
    run_stages(trainer, ("pretext", "joint"))
    pretext, joint = drawn[("pretext",)], drawn[("joint",)]
    assert len(pretext) == len(joint) > 2 and pretext != joint
    # from the run's seed alone (what SFT stages still draw from) the two are the same clips
    assert clips(load_samples(cfg, ("pretext",), "train")) == clips(
        load_samples(cfg, ("joint",), "train")
    )


def test_samples_are_held_packed_and_read_as_the_plain_ones(dataset):
    # every sample's pixels were held as plain arrays: 16.5 GB at the model card's step 3
    import tracemalloc

    from critic.prompts import PackedPrompt, Prompt
    from critic.train.draws import load_samples

    kinds = ("sft", "score", "frozen", "failure", "pretext", "joint")
    _, cfg = load_recipe(f"data=[{dataset}]", "frames=8", "cuts=4")

    def loaded(pack: bool) -> tuple[list, int]:
        cfg.pack_samples = pack
        tracemalloc.start()
        try:
            samples = load_samples(cfg, kinds, "train")
            return samples, tracemalloc.get_traced_memory()[0]  # held once loaded
        finally:
            tracemalloc.stop()

    loaded(False)  # the first load's own allocations (caches, imports) are not the samples'
    (packed, held_packed), (plain, held_plain) = loaded(True), loaded(False)
    assert {type(s.prompt) for s in packed} == {PackedPrompt}
    assert {type(s.prompt) for s in plain} == {Prompt}
    assert len(packed) == len(plain) > 100
    for a, b in zip(packed, plain, strict=True):  # the same draws, the same pixels
        assert (a.kind, a.target, a.completion, a.frame, a.meta) == (
            b.kind, b.target, b.completion, b.frame, b.meta
        )  # fmt: skip
        assert a.prompt.messages == b.prompt.messages and a.prompt.choices == b.prompt.choices
        for x, y in zip(a.prompt.videos, b.prompt.videos, strict=True):
            np.testing.assert_array_equal(x, y)
    pixels = sum(v.nbytes for s in plain for v in s.prompt.videos)
    assert held_plain > pixels and held_plain / held_packed > 3, (pixels, held_plain, held_packed)
    with pytest.raises(Exception, match=r"^pack_samples='yes' must be true or false$"):
        check_overrides(f"data=[{dataset}]", "pack_samples=yes")


def test_a_weighted_batch_gives_each_folder_its_share():
    # drawn without replacement, a small folder of high weight could not fill its share of a
    # batch: 40 samples at weight 10 beside 200 at weight 1, declared 0.667, got 0.60
    from critic.train.draws import draw_batch

    folders = np.array([0] * 200 + [1] * 40)
    chance = np.where(folders == 1, 10.0, 1.0)
    chance /= chance.sum()
    rng = np.random.default_rng(0)
    drawn = np.concatenate([draw_batch(rng, len(folders), 32, chance) for _ in range(2000)])
    assert np.mean(folders[drawn]) == pytest.approx(400 / 600, abs=0.01)
    # unweighted draws stay without replacement where there are enough samples (earlier runs')
    batch = draw_batch(np.random.default_rng(0), 240, 32, None)
    assert len(set(batch.tolist())) == 32
    np.testing.assert_array_equal(batch, np.random.default_rng(0).choice(240, 32, replace=False))
    assert len(draw_batch(np.random.default_rng(0), 8, 32, None)) == 32  # fewer: with


def test_a_teacher_read_at_another_clip_length_is_warned_of(dataset, tmp_path, tiny_model, caplog):
    # teacher=viscritic-small (Reacher at 1 frame) on 2-frame Reacher clips distilled readings
    # from a length it never learned, without a word
    import json
    import logging

    from critic.models import CLIP_FRAMES_KEY, TASK_CLIP_FRAMES_KEY, save_model
    from critic.train.draws import label_with_teacher, load_samples

    teacher = tmp_path / "teacher"
    save_model(*tiny_model, teacher)
    config = json.loads((teacher / "config.json").read_text())
    config.update({CLIP_FRAMES_KEY: 8, TASK_CLIP_FRAMES_KEY: {"Reacher-v5": 1}})
    (teacher / "config.json").write_text(json.dumps(config))
    _, cfg = load_recipe(f"data=[{dataset}]", f"teacher={teacher}", *TINY)
    train = load_samples(cfg, ("score",), "train")
    with caplog.at_level(logging.WARNING, logger="critic.train.draws"):
        assert label_with_teacher(cfg, train[:2]) == 2
    assert [r.getMessage() for r in caplog.records] == [
        f"the teacher {teacher} was trained on Reacher-v5 at 1 frames per clip and reads this "
        f"run's clips of {cfg.frames} (frames=, task_frames=): its readings there may mean "
        "little; give 'task_frames={Reacher-v5: 1}' to read it as it was trained"
    ]
    caplog.clear()
    cfg.task_frames = {"Reacher-v5": 1}  # read as it was trained: nothing to say
    with caplog.at_level(logging.WARNING, logger="critic.train.draws"):
        label_with_teacher(cfg, load_samples(cfg, ("score",), "train")[:2])
    assert not caplog.records
    # a teacher that records the tasks it knows, Reacher not among them: no length to claim
    config["viscritic_tasks"] = ["Pusher-v5"]
    (teacher / "config.json").write_text(json.dumps(config))
    cfg.task_frames = {}
    with caplog.at_level(logging.WARNING, logger="critic.train.draws"):
        label_with_teacher(cfg, train[:2])
    assert not caplog.records
