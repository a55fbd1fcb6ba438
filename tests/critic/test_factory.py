"""critic.factory.critic_spec_problem: what make_critic would refuse, found without loading."""

from omegaconf import OmegaConf

from critic.factory import critic_spec_problem, make_critic


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
