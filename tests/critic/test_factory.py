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
