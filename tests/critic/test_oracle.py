"""The oracle critic and the critic factory."""

from __future__ import annotations

import numpy as np
import pytest

from critic import (
    CriticError,
    FailureQuery,
    OracleCritic,
    ProgressQuery,
    UnknownCriticError,
    make_critic,
)


def test_oracle_reads_privileged_progress_in_order():
    critic = OracleCritic()
    estimates = critic.estimate_progress(
        [ProgressQuery("a", privileged_progress=p) for p in (0.1, 0.9, 0.5)]
    )
    assert [e.progress for e in estimates] == [0.1, 0.9, 0.5]
    assert all(e.status.value == "ok" and e.spread is None for e in estimates)
    assert critic.needs_frames is False and critic.name == "oracle"


def test_oracle_refuses_queries_without_ground_truth():
    with pytest.raises(CriticError) as err:
        OracleCritic().estimate_progress(
            [ProgressQuery("a", privileged_progress=0.2), ProgressQuery("b")]
        )
    assert str(err.value) == (
        "OracleCritic got query 1 without privileged_progress; the oracle reads the simulator's "
        "ground truth. Build queries through envs.VisCriticReward (which fills it from the task) "
        "or set ProgressQuery.privileged_progress."
    )


def test_oracle_progress_is_unreadable_without_a_finite_ground_truth():
    # a labelled video's episode carries nan progress: nothing to read, so no progress and no
    # P(achieved) (float(nan >= ACHIEVED) was 0: every such episode a sure failure)
    from critic.base import ParseStatus, ProgressEstimate
    from critic.oracle import NoisyOracleCritic

    queries = [ProgressQuery("a", privileged_progress=float("nan")),
               ProgressQuery("a", privileged_progress=0.4)]  # fmt: skip
    unread = ProgressEstimate(None, status=ParseStatus.NOT_A_NUMBER)
    assert OracleCritic().estimate_progress(queries) == [
        unread,
        ProgressEstimate(0.4, achieved=0.0),
    ]
    noisy = NoisyOracleCritic(offset_sd=0.0, step_sd=0.1).estimate_progress(queries)
    assert noisy[0] == unread and noisy[1].progress is not None


def test_oracle_failure_verdicts():
    verdicts = OracleCritic().detect_failure(
        [
            FailureQuery("a", privileged_success=True, privileged_failure_type="ignored"),
            FailureQuery("b", privileged_success=False, privileged_failure_type="missed_grasp"),
        ]
    )
    assert (verdicts[0].success, verdicts[0].failure_type) == (True, None)
    assert (verdicts[1].success, verdicts[1].failure_type) == (False, "missed_grasp")
    with pytest.raises(CriticError):
        OracleCritic().detect_failure([FailureQuery("c")])


def test_factory():
    assert isinstance(make_critic("oracle"), OracleCritic)
    assert make_critic({"name": "oracle", "needs_frames": True}).needs_frames is True
    critic = OracleCritic()
    assert make_critic(critic) is critic
    with pytest.raises(UnknownCriticError) as err:
        make_critic("gpt")
    assert str(err.value) == (
        "unknown critic 'gpt'; known critics: ['oracle', 'noisy_oracle', 'vlm', 'ensemble', 'viscritic-small', 'small', 'small-qwen3vl', 'tiny', 'tiny-qwen3vl']. Pass one of these names, "
        "a checkpoint directory, a critic server URL (http://host:port), a mapping "
        "{'name': ..., **kwargs}, or a critic.Critic instance."
    )
    with pytest.raises(UnknownCriticError, match=r"^critic \['oracle'\] names no critic; pass"):
        make_critic(["oracle"])


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "oracle", "bogus": 1},
         "bogus=1: not an option of the 'oracle' critic; its options are ['needs_frames']"),
        ({"name": "ensemble", "members": ["oracle"], "mean": True},
         "mean=True: not an option of the 'ensemble' critic; its options are ['members', "
         "'combine', 'std_weight', 'needs_frames']"),
        ({"name": "tiny", "temp": 0.5}, "temp=0.5: not an option of the 'tiny' critic; its "
                                         "options are ['model', 'mode', 'prompt', "),
    ],
)  # fmt: skip
def test_an_option_a_critic_does_not_take_is_named_with_those_it_does(spec, message):
    from critic.factory import UnknownCriticOptionError

    with pytest.raises(UnknownCriticOptionError) as err:
        make_critic(spec)
    assert str(err.value).startswith(message)
    assert isinstance(err.value, UnknownCriticError)  # caught wherever an unknown critic is


def _episode(first_value: int, progress: list[float]) -> list[ProgressQuery]:
    """An episode's queries: the reset query (the first frame against itself), then one per
    progress value, each with a new current frame."""
    import numpy as np

    first = np.full((4, 4, 3), first_value, np.uint8)
    now = [first]
    for i in range(len(progress)):  # 255 with the index in two bytes: never the first frame
        frame = np.full((4, 4, 3), 255, np.uint8)
        frame.flat[:2] = divmod(i, 256)
        now.append(frame)
    return [ProgressQuery("reach", initial_frame=first, current_frame=frame, privileged_progress=p)
            for frame, p in zip(now, [0.0, *progress], strict=True)]  # fmt: skip


def test_noisy_oracle_shares_one_offset_per_episode_and_reads_the_reset_exactly():
    import numpy as np

    from critic import NoisyOracleCritic

    critic = NoisyOracleCritic(offset_sd=0.2, seed=3)
    queries = _episode(7, [0.3, 0.5, 0.6])
    offset = critic.episode_offset(queries[0].initial_frame)
    # the offset is a normal draw keyed by the seed and the first frame's bytes
    digest = __import__("hashlib").blake2b(queries[0].initial_frame.tobytes(), digest_size=8)
    expected = np.random.default_rng([3, int.from_bytes(digest.digest(), "little")]).normal(0, 0.2)
    assert offset == pytest.approx(expected) and offset != 0.0
    read = [e.progress for e in critic.estimate_progress(queries)]
    assert read == pytest.approx(
        [0.0] + [float(np.clip(p + offset, 0, 1)) for p in (0.3, 0.5, 0.6)]
    )
    # the same episode in another batch order, or by another instance, gets the same offset
    again = NoisyOracleCritic(offset_sd=0.2, seed=3).estimate_progress(queries[::-1])
    assert [e.progress for e in again][::-1] == pytest.approx(read)
    # another first frame, another offset; another seed, another offset
    assert critic.episode_offset(_episode(8, [0.1])[0].initial_frame) != offset
    assert (
        NoisyOracleCritic(offset_sd=0.2, seed=4).episode_offset(queries[0].initial_frame) != offset
    )


def test_noisy_oracle_errors_have_the_sizes_asked_and_stay_in_range():
    import numpy as np

    from critic import NoisyOracleCritic

    critic = NoisyOracleCritic(offset_sd=0.2, seed=0)
    offsets = [critic.episode_offset(np.full((2, 2, 3), v, np.uint8)) for v in range(256)]
    assert np.std(offsets) == pytest.approx(0.2, abs=0.03)  # 256 episodes: SE of the SD ~0.009
    assert abs(np.mean(offsets)) < 0.04
    steps = NoisyOracleCritic(offset_sd=0.0, step_sd=0.1, seed=0)
    read = [e.progress for e in steps.estimate_progress(_episode(1, [0.5] * 400))[1:]]
    assert np.std(read) == pytest.approx(0.1, abs=0.015) and len(set(read)) == 400
    # clipped to [0, 1], and "achieved" from the noisy reading
    ends = NoisyOracleCritic(offset_sd=0.0, step_sd=5.0, seed=1).estimate_progress(
        _episode(1, [0.5] * 50)
    )[1:]
    read = [e.progress for e in ends]
    assert all(0.0 <= p <= 1.0 for p in read) and {0.0, 1.0} <= set(read)
    assert all(e.achieved == float(e.progress == 1.0) for e in ends)
    # no error asked: the oracle
    exact = NoisyOracleCritic(offset_sd=0.0, step_sd=0.0).estimate_progress(_episode(1, [0.3]))
    assert [e.progress for e in exact] == [0.0, 0.3]


def test_noisy_oracle_reads_one_frame_the_same_in_any_form_and_refuses_what_is_not_one():
    import numpy as np

    from critic import NoisyOracleCritic, ProgressQuery
    from critic.vision import FrameError

    critic = NoisyOracleCritic(offset_sd=0.2)
    frame = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)

    def read(first):
        query = ProgressQuery("x", initial_frame=first, current_frame=frame[::-1],
                              privileged_progress=0.5)  # fmt: skip
        return critic.estimate_progress([query])[0].progress

    assert read(frame) == read(np.asfortranarray(frame)) == read(frame[:, ::-1][:, ::-1])
    # a list of the frame hashed its int64 bytes: another episode's offset (0.77 against 0.36);
    # refused now, as a VLM critic refuses it
    with pytest.raises(FrameError, match=r"^query 0's initial_frame is int64 of shape .*: from "
                       r"integers in \[0, 255\]: x.astype\(np.uint8\)$"):  # fmt: skip
        read(frame.tolist())
    with pytest.raises(FrameError, match=r"^query 0's initial_frame is float64 of shape"):
        read(frame / 255.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"offset_sd": -0.1}, "NoisyOracleCritic offset_sd=-0.1 must be a finite number >= 0"),
        ({"step_sd": "lots"}, "NoisyOracleCritic step_sd='lots' must be a finite number >= 0"),
        ({"step_sd": float("inf")}, "NoisyOracleCritic step_sd=inf must be a finite number >= 0"),
        (
            {"needs_frames": False},
            "NoisyOracleCritic keys each episode's offset by its first frame",
        ),
        # one stream per critic: every env built from one spec drew the same noise (corr 1.0)
        (
            {"needs_frames": False, "offset_sd": 0.0, "step_sd": 0.15},
            "NoisyOracleCritic keys each query's noise by its frames (without them every env",
        ),
    ],
)
def test_noisy_oracle_bad_options_are_typed_errors(kwargs, message):
    from critic import NoisyOracleCritic

    with pytest.raises(CriticError, match=message.replace("(", r"\(")):
        NoisyOracleCritic(**kwargs)
    with pytest.raises(CriticError, match=r"without its first and current frames"):
        NoisyOracleCritic().estimate_progress([ProgressQuery("a", privileged_progress=0.2)])
    assert make_critic({"name": "noisy_oracle", "offset_sd": 0.1}).offset_sd == 0.1
    # its first argument is its own first option: needs_frames, Critic's, is keyword-only (it
    # took the 0.3 and refused it as no bool)
    assert NoisyOracleCritic(0.3).offset_sd == 0.3 and NoisyOracleCritic(0.3).needs_frames


def test_oracle_options_are_typed_errors():
    with pytest.raises(CriticError, match=r"^NoisyOracleCritic seed='a' must be an integer >= 0$"):
        make_critic({"name": "noisy_oracle", "seed": "a"})
    with pytest.raises(CriticError, match=r"^needs_frames='no' must be True or False$"):
        make_critic({"name": "oracle", "needs_frames": "no"})
    assert make_critic({"name": "noisy_oracle", "seed": np.int64(4)}).seed == 4


@pytest.mark.parametrize("critic", [OracleCritic(), make_critic({"name": "noisy_oracle"})])
def test_oracle_takes_a_list_of_queries_of_the_right_kind(critic):
    progress = ProgressQuery("lift", privileged_progress=0.5)
    failure = FailureQuery("lift", privileged_success=True)
    with pytest.raises(CriticError) as err:
        critic.estimate_progress(progress)
    assert str(err.value) == (
        f"{critic.name}.estimate_progress takes a list of ProgressQuery, got a ProgressQuery; "
        "pass a list of ProgressQuery, e.g. [query]"
    )
    with pytest.raises(CriticError) as err:
        critic.estimate_progress([failure])
    assert str(err.value) == (
        f"{critic.name}.estimate_progress takes a list of ProgressQuery, got a list whose item 0 "
        "is a FailureQuery; pass a list of ProgressQuery, e.g. [query]"
    )
    with pytest.raises(CriticError) as err:
        critic.detect_failure(failure)
    assert str(err.value) == (
        f"{critic.name}.detect_failure takes a list of FailureQuery, got a FailureQuery; pass a "
        "list of FailureQuery, e.g. [query]"
    )


def test_noisy_oracle_reads_the_same_query_the_same_in_any_order():
    # the query noise came from one generator for the critic's life: an env reset to the same
    # seed twice read its episode differently (by up to 0.23), and so did a vec env's order
    import gymnasium as gym

    import envs  # noqa: F401 - registers VisCriticReward-v0
    from critic import NoisyOracleCritic

    critic = NoisyOracleCritic(offset_sd=0.1, step_sd=0.1, seed=2)
    queries = _episode(5, [0.2, 0.4, 0.6, 0.8])
    one_batch = [e.progress for e in critic.estimate_progress(queries)]
    reversed_one_by_one = [critic.estimate_progress([q])[0].progress for q in queries[::-1]]
    assert reversed_one_by_one[::-1] == one_batch
    assert len(set(one_batch[1:])) == 4  # noise, not one value
    env = gym.make("VisCriticReward-v0", env="Reacher-v5", query_every=5,
                   critic={"name": "noisy_oracle", "offset_sd": 0.1, "step_sd": 0.1})  # fmt: skip
    env.action_space.seed(0)
    actions = [env.action_space.sample() for _ in range(20)]
    episodes = []
    for _ in range(2):
        env.reset(seed=3)
        episodes.append([env.step(a)[1] for a in actions])
    env.close()
    assert episodes[0] == episodes[1] and len(set(episodes[0])) > 2


def test_noisy_oracle_reads_a_query_of_frames_alone_by_its_first_and_last_frame():
    # as a VLM critic reads one: it refused an offset ("without its first and current frames"),
    # and drew step errors from its running generator, another reading on every call
    from critic.base import clip_indices
    from critic.oracle import NoisyOracleCritic

    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8) for _ in range(3)]
    queries = [ProgressQuery("reach", frames=c, privileged_progress=0.5) for c in clips]
    anchored = [ProgressQuery("reach", frames=c, privileged_progress=0.5, initial_frame=c[0],
                              current_frame=c[-1]) for c in clips]  # fmt: skip
    for options in ({"offset_sd": 0.0, "step_sd": 0.1}, {"offset_sd": 0.2}):
        critic = NoisyOracleCritic(**options)
        first = [e.progress for e in critic.estimate_progress(queries)]
        assert [e.progress for e in critic.estimate_progress(queries)] == first
        assert [e.progress for e in critic.estimate_progress(anchored)] == first
        assert len(set(first)) == 3  # noisy, not the truth
    # a clip's length and count are whole numbers: nan gave [-2**63] * 4, 2.5 a clip of its own
    for available, count in ((float("nan"), 4), (2.5, 4), (10, 2.5)):
        with pytest.raises(ValueError, match="a clip needs whole numbers of frames"):
            clip_indices(available, count)
    # frames it cannot read are named, as a VLM critic names them (a ragged list was numpy's
    # raw ValueError)
    from critic.vision import FrameError

    ragged = [np.zeros((8, 8, 3), np.uint8), np.zeros((4, 4, 3), np.uint8)]
    with pytest.raises(FrameError, match=r"query 0's frames hold frames of different sizes"):
        NoisyOracleCritic().estimate_progress([ProgressQuery("reach", frames=ragged,
                                                             privileged_progress=0.5)])  # fmt: skip
