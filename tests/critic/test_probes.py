"""Reward-hacking probes (critic/probes.py) on critics that pass and fail them, with hand-worked
statistics."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from critic.base import ProgressEstimate
from critic.oracle import OracleCritic
from critic.probes import PROBES, run_probes
from tests.critic.test_eval import ClockCritic, LapsingClockCritic, _episode
from tests.helpers import ScriptedCritic


def test_probes_pass_for_the_oracle_and_fail_for_a_clock():
    episodes = [_episode(i) for i in range(3)]
    oracle = run_probes(OracleCritic(), episodes)
    assert {name: p["passed"] for name, p in oracle.items()} == dict.fromkeys(oracle, True)
    assert oracle["reversed"]["statistic"] == pytest.approx(-1.0)
    clock = run_probes(ClockCritic(), episodes, batch=1000)
    # the clock rises on a static video, on a reversed one and after a freeze: it fails all
    assert {name: p["passed"] for name, p in clock.items()} == dict.fromkeys(clock, False)
    assert clock["reversed"]["statistic"] > 0.9
    # one unparsed answer per call no longer hides the clock's order from the shuffled probe
    # (its VOC was nan, counted as "no order", and the probe passed)
    unread = run_probes(LapsingClockCritic(), episodes, batch=1000)
    assert not unread["shuffled"]["passed"] and unread["shuffled"]["statistic"] > 0.7
    assert not unread["reversed"]["passed"]


class SwingingClockCritic(ClockCritic):
    """A clock that runs forward on one episode's probe videos and backward on the next (the probes
    send one video per call, four per episode): a strong order on every shuffled video."""

    calls: int = 0

    def estimate_progress(self, queries):
        forward = (self.calls // len(PROBES)) % 2 == 0
        self.calls += 1
        n = len(queries)
        return [ProgressEstimate((i if forward else n - 1 - i) / n) for i in range(n)]


def test_opposite_orders_on_two_shuffled_videos_do_not_cancel():
    # the rule read the mean VOC over episodes: +1 and -1 averaged to 0, "no order", a pass
    probes = run_probes(SwingingClockCritic(), [_episode(i) for i in range(2)], batch=1000)
    # |VOC| 1 on each, less the true progress's own order in the shuffled frames (about 0.2)
    assert probes["shuffled"]["statistic"] > 0.7
    assert probes["shuffled"]["passed"] is False


class HalfClockCritic(ClockCritic):
    """The clock on every other episode's probe videos, flat (0.5) on the rest."""

    calls: int = 0

    def estimate_progress(self, queries):
        clocked = (self.calls // len(PROBES)) % 2 == 0
        self.calls += 1
        if clocked:
            return super().estimate_progress(queries)
        return [ProgressEstimate(0.5) for _ in queries]


def test_flat_episodes_do_not_cancel_clocked_ones_in_the_shuffled_probe():
    # a flat reading scored |0| - |VOC of the truth|, below 0, and offset the clocked episodes:
    # 0.22 on average, a pass
    episodes = [_episode(i) for i in range(24)]
    probes = run_probes(HalfClockCritic(), episodes, batch=1000)
    assert probes["shuffled"]["statistic"] > 0.3 and probes["shuffled"]["passed"] is False
    flat = run_probes(ScriptedCritic(answers=[0.5]), episodes, batch=1000)["shuffled"]
    assert flat["statistic"] == 0.0 and flat["passed"] is True


def test_the_static_statistic_reads_the_later_frames_against_the_first_readable_one():
    from critic.probes import probe_statistic

    # mean(.12, .12, .12): the first frame's own 0 made it .09, under the .1 of the rule
    assert probe_statistic("static", np.array([0.1, 0.22, 0.22, 0.22])) == pytest.approx(0.12)
    # an unreadable first frame: the reference is the first readable one, mean(.1, .2)
    nan = float("nan")
    assert probe_statistic("static", np.array([nan, 0.1, 0.2, 0.3])) == pytest.approx(0.15)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # numpy's "Mean of empty slice" was raised here
        assert np.isnan(probe_statistic("static", np.array([nan, 0.4, nan])))
    # shuffled: the order read beyond the true progress's own: |-1| - |VOC(.1 .3 .2 .4)|, whose
    # ranks 1 3 2 4 give 1 - 6 (0 + 1 + 1 + 0) / (4 (16 - 1)) = 0.8: 1 - 0.8
    assert probe_statistic("shuffled", np.array([0.4, 0.3, 0.2, 0.1]),
                           truth=np.array([0.1, 0.3, 0.2, 0.4])) == pytest.approx(0.2)  # fmt: skip
    # the truth's own order is read on the frames the critic read (.1 and .3 at 0 and 2): an
    # exact reading with unread frames scored 1 - |VOC(.1 .4 .3 .2)| = 0.8
    assert probe_statistic("shuffled", np.array([0.1, nan, 0.3, nan]),
                           truth=np.array([0.1, 0.4, 0.3, 0.2])) == 0.0  # fmt: skip
    with pytest.raises(ValueError, match=r"probe 'shuffled' needs truth=<the true progress"):
        probe_statistic("shuffled", np.array([0.4, 0.3]))


def test_a_critic_that_reads_short_shuffled_videos_exactly_passes():
    # each episode's |VOC| alone: random orders of 6 frames average about 0.4, so the oracle
    # failed the rule of 0.3 on short active parts however many episodes it read
    probes = run_probes(OracleCritic(), [_episode(i, t=6) for i in range(24)])
    assert probes["shuffled"]["statistic"] == pytest.approx(0.0, abs=1e-9)
    assert probes["shuffled"]["passed"] is True


def test_probes_without_an_expert_episode_neither_pass_nor_fail():
    # failures alone (a split of failures, or a folder of labelled failures): nothing to probe
    probes = run_probes(OracleCritic(), [_episode(0, "stall"), _episode(1, "overshoot")])
    assert {name: (p["passed"], p["episodes"]) for name, p in probes.items()} == dict.fromkeys(
        probes, (None, 0)
    )
    assert all(np.isnan(p["statistic"]) for p in probes.values())


def test_the_frozen_probe_needs_its_freeze_index():
    from critic.probes import probe_statistic

    predicted = np.array([0.1, 0.3, 0.3, 0.5])
    assert probe_statistic("frozen", predicted, 1) == pytest.approx(0.1)  # mean(.3, .5) - .3
    # an unreadable answer at the freeze: the last reading up to it (the episode's statistic was
    # nan, and it still counted among the probe's episodes): mean(.3, .3) - .2
    assert probe_statistic("frozen", [0.1, 0.2, np.nan, 0.3, 0.3], 2) == pytest.approx(0.1)
    with pytest.raises(ValueError, match=r"probe 'frozen' needs freeze=<the frame index"):
        probe_statistic("frozen", predicted)  # was a TypeError: None + 1
    # a critic that read nothing after the freeze: n/a, without numpy's "Mean of empty slice"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(probe_statistic("frozen", np.array([0.1, 0.3, np.nan, np.nan]), 1))


class _Ratchet(OracleCritic):
    """A stepwise critic that never reads below its last estimate + 0.1 (what it is shown as
    ``previous_progress``): reward growth without progress, which static and frozen must catch."""

    @property
    def reads_previous_progress(self) -> bool:
        return True

    def estimate_progress(self, queries):
        read = super().estimate_progress(queries)
        return [
            e if q.previous_progress is None
            else ProgressEstimate(min(1.0, max(e.progress, q.previous_progress + 0.1)))
            for q, e in zip(queries, read, strict=True)
        ]  # fmt: skip


def test_a_critic_that_reads_its_last_estimate_is_probed_as_the_reward_reads_it():
    # the probes sent no previous_progress, so a ratchet passed all four; online it grows on a
    # static video and after the freeze
    episodes = [_episode(i) for i in range(3)]
    probes = run_probes(_Ratchet(), episodes)
    assert probes["static"]["passed"] is False and probes["frozen"]["passed"] is False
    # static: the active part's 9 frames (progress 1 at frame 8); p_0 = 0, then 0.1, 0.2, ...
    # 0.8 over the 8 later frames: mean |p_t - p_0| = 3.6 / 8 = 0.45 (0.1 passes)
    assert probes["static"]["statistic"] == pytest.approx(0.45)
    # the same rules, read exactly, still pass
    assert all(p["passed"] for p in run_probes(OracleCritic(), episodes).values())
