"""critic.factory.critic_spec_problem: what make_critic would refuse, found without loading."""

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from critic.factory import critic_spec_problem, make_critic
from rollout.checkpoint import ModelLoadError


def test_a_spec_make_critic_builds_has_no_problem_and_one_it_refuses_is_named():
    # {name: vlm} builds VLMCritic's default model: it was refused as "model=None"
    for spec in ("oracle", {"name": "vlm"}, {"name": "vlm", "mode": "reason"}, "tiny",
                 {"name": "ensemble", "members": ["oracle", "tiny"]}):  # fmt: skip
        assert critic_spec_problem(spec) is None
    assert make_critic({"name": "vlm", "max_new_tokens": 4}).model == "tiny"
    assert critic_spec_problem({"name": "oracle", "bogus": 1}) == (
        "bogus=1: not an option of the 'oracle' critic; its options are ['needs_frames']"
    )
    # an ensemble from a config (its members a ListConfig) is checked member by member
    spec = OmegaConf.create({"name": "ensemble", "members": ["oracle", {"name": "oracle", "x": 1}]})
    assert critic_spec_problem(spec) == (
        "ensemble member {'name': 'oracle', 'x': 1}: x=1: not an option of the 'oracle' critic; "
        "its options are ['needs_frames']"
    )


def test_an_ensemble_or_a_checkpoint_the_factory_would_refuse_is_named_before_it_loads(tmp_path):
    # each passed the check and failed when built: hours later, after the other conditions ran
    for spec, said in [
        ({"name": "ensemble", "members": ["oracle", "oracle"], "combine": "max"},
         "combine='max' is not a rule; pick one of "),
        ({"name": "ensemble", "members": ["oracle"]}, "members=['oracle']: an ensemble needs a "
         "list of two or more critics"),
        ({"name": "ensemble"}, "members=[]: an ensemble needs a list of two or more critics"),
        ({"name": "ensemble", "members": ["oracle", "oracle"], "std_weight": -1},
         "std_weight=-1 must be a finite number >= 0"),
    ]:  # fmt: skip
        assert critic_spec_problem(spec).startswith(said)
    # a checkpoint's small files without its weights (copied without them)
    import shutil

    from critic.weights import SHIPPED

    folder = tmp_path / "ckpt"
    shutil.copytree(SHIPPED["viscritic-small"], folder)
    (folder / "model.safetensors").unlink()
    assert critic_spec_problem(str(folder)) == (
        f"{folder} holds no weights (model.safetensors, or its shards); copy them beside its "
        "config.json"
    )


def test_a_blank_name_or_a_model_beside_a_model_s_name_is_refused():
    import pytest

    from critic.factory import UnknownCriticError, UnknownCriticOptionError

    # "" was the working directory as a path: "cannot load critic model : Repo id must use ..."
    for spec in ("", {"name": " "}):
        assert critic_spec_problem(spec).startswith(f"critic {spec!r} names no critic; known")
        with pytest.raises(UnknownCriticError, match="names no critic"):
            make_critic(spec)
    # {name: viscritic-small, model: tiny} built tiny without a word
    said = "critic 'viscritic-small' with model='tiny': the name is the model; give {name: vlm, "
    assert critic_spec_problem({"name": "viscritic-small", "model": "tiny"}).startswith(said)
    with pytest.raises(UnknownCriticOptionError, match="the name is the model"):
        make_critic({"name": "viscritic-small", "model": "tiny"})


def test_a_checkpoint_copied_short_or_with_a_processor_config_it_cannot_read_is_named(
    tiny_model, tmp_path
):
    import json
    import shutil

    from critic.models import save_model

    good = tmp_path / "good"
    save_model(*tiny_model, good)
    assert critic_spec_problem(str(good)) is None
    # a sharded checkpoint one shard short (a 7B copy cut off): it passed, and failed to load
    # after the other conditions had run
    short = tmp_path / "short"
    shutil.copytree(good, short)
    (short / "model.safetensors").rename(short / "model-00001-of-00002.safetensors")
    shards = {
        "a.weight": "model-00001-of-00002.safetensors",
        "b.weight": "model-00002-of-00002.safetensors",
    }
    (short / "model.safetensors.index.json").write_text(json.dumps({"weight_map": shards}))
    assert critic_spec_problem(str(short)) == (
        f"{short} lacks 1 of the 2 weight shards its model.safetensors.index.json names "
        "(model-00002-of-00002.safetensors); the copy was cut short: copy them beside its "
        "config.json"
    )
    # a processor config frames cannot be read with: found before loading, as loading finds it
    for text, says in [("{bad", "is not a readable processor config"),
                       (json.dumps({"image_std": [0, 0, 0]}), "video processor config cannot be "
                        "read: image_std=")]:  # fmt: skip
        bad = tmp_path / f"proc{len(text)}"
        shutil.copytree(good, bad)
        (bad / "preprocessor_config.json").write_text(text)
        assert says in critic_spec_problem(str(bad))


def test_a_home_relative_folder_builds_and_a_path_that_is_no_folder_says_what_it_is(
    tiny_model, tmp_path, monkeypatch
):
    import pytest

    from critic.factory import UnknownCriticError
    from critic.models import save_model

    monkeypatch.setenv("HOME", str(tmp_path))
    save_model(*tiny_model, tmp_path / "ckpt")
    # load_checkpoint reads ~ as the home folder; the factory refused the folder as unknown
    for spec in ("~/ckpt", {"name": "vlm", "model": "~/ckpt"}):
        assert critic_spec_problem(spec) is None
        assert make_critic(spec).model == str(tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    for name, says in [
        (str(weights), f"{weights} is a file; name the checkpoint folder that holds it "
         f"({tmp_path / 'ckpt'})"),
        ("/nowhere/ckpt", "there is no folder /nowhere/ckpt on this machine; name a checkpoint "
         "folder that exists"),
        ("Qwen/Qwen2.5-VL-7B-Instruct", "'Qwen/Qwen2.5-VL-7B-Instruct' is no folder here; it "
         "reads as a Hugging Face Hub id, and nothing downloads at run time"),
    ]:  # fmt: skip
        with pytest.raises(UnknownCriticError) as caught:
            make_critic(name)
        assert str(caught.value).startswith(f"critic {name!r}: {says}")
        assert critic_spec_problem({"name": "vlm", "model": name}).startswith(
            f"model={name!r}: {says}"
        )


def test_a_mistyped_run_folder_is_not_taken_for_a_hub_id(tmp_path, monkeypatch):
    from critic.factory import UnknownCriticError

    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    # outputs/ is a folder here: outputs/final is a run folder mistyped, not Org/Model
    try:
        make_critic("outputs/final")
    except UnknownCriticError as exc:
        assert "there is no folder outputs/final on this machine" in str(exc)
        assert "Hub" not in str(exc)
    else:
        raise AssertionError("outputs/final built a critic")


def test_a_folder_named_as_a_shipped_critic_or_preset_is_read_as_the_folder_everywhere(
    tmp_path, monkeypatch, tiny_model
):
    # the check read the folder, make_critic the shipped critic, the server the folder
    from critic.factory import critic_spec_problem
    from critic.models import load_model, model_type, save_model
    from rollout.checkpoint import load_checkpoint

    monkeypatch.chdir(tmp_path)
    (tmp_path / "viscritic-small").mkdir()  # empty: refused by the check and by every loader
    assert critic_spec_problem("viscritic-small").startswith(
        "model='viscritic-small' is a folder but not a checkpoint"
    )
    with pytest.warns(UserWarning, match=r"'viscritic-small' is a folder here and the name of the "
                      r"shipped critic"), pytest.raises(ModelLoadError):  # fmt: skip
        make_critic("viscritic-small")
    model, tokenizer = tiny_model
    save_model(model, tokenizer, tmp_path / "small")  # a checkpoint folder named as a preset
    assert model_type("small") == model.config.model_type
    with pytest.warns(UserWarning, match=r"'small' is a folder here and the name of the preset"):
        loaded, _ = load_model("small")
    assert Path(loaded.name_or_path) == Path("small")  # not the preset built in memory
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)
    with pytest.warns(UserWarning, match=r"the shipped critic"), pytest.raises(ModelLoadError):
        load_checkpoint("viscritic-small")  # the server: the folder, as the check and critic
    # a file of a preset's name is no checkpoint: the preset, as the check reads it
    (tmp_path / "tiny").write_text("notes")
    assert critic_spec_problem("tiny") is None
    assert make_critic("tiny").name == "vlm:tiny:score"
