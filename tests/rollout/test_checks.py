"""The one definition of an integer and a number in a user's option, and the checks that use it."""

import dataclasses
import json
import math

import numpy as np
import pytest

from rollout.cache import VideoEmbeddingCache
from rollout.checks import folder_problem, is_int, is_number, plain_values
from rollout.engine import SamplingParams
from rollout.remote import RemoteEngine


@pytest.mark.parametrize(
    ("value", "integer", "number"),
    [
        (3, True, True),
        (np.int64(3), True, True),
        (np.uint8(3), True, True),
        (True, False, False),
        (np.bool_(True), False, False),
        (3.0, False, True),
        (np.float32(0.5), False, True),
        (math.nan, False, False),
        (-math.inf, False, False),
        ("3", False, False),
        (None, False, False),
        ([3], False, False),
        (10**400, True, False),  # too large for a float: was an OverflowError, not False
    ],
)
def test_what_counts_as_an_integer_and_a_number(value, integer, number):
    assert is_int(value) is integer
    assert is_number(value) is number


def test_a_number_may_be_left_unbounded_when_asked():
    assert is_number(math.nan, finite=False) and is_number(math.inf, finite=False)
    assert not is_number(True, finite=False)


def test_plain_values_turns_numpy_into_what_json_holds_and_keeps_the_rest():
    marker = object()  # a critic instance: kept, not copied
    given = {"a": np.int64(3), "b": [np.float32(0.5), (np.int8(1), "x")], "c": np.arange(2),
             "d": {"e": np.bool_(True)}, "f": marker, "g": None}  # fmt: skip
    plain = plain_values(given)
    assert plain == {"a": 3, "b": [0.5, (1, "x")], "c": [0, 1], "d": {"e": True}, "f": marker,
                     "g": None}  # fmt: skip
    assert type(plain["a"]) is int and type(plain["b"][1]) is tuple and plain["f"] is marker
    assert type(plain["d"]["e"]) is bool and given["a"].dtype == np.int64  # the given is kept
    from omegaconf import OmegaConf  # a config's lists (an ensemble's members) are lists too

    config = OmegaConf.create({"name": "ensemble", "members": ["oracle", {"name": "oracle"}]})
    assert json.loads(json.dumps(plain_values(config))) == {
        "name": "ensemble", "members": ["oracle", {"name": "oracle"}]
    }  # fmt: skip


def test_numpy_sampling_params_are_stored_plain_and_go_over_the_wire():
    params = SamplingParams(
        n=np.int64(2), max_new_tokens=np.int32(8), temperature=np.float32(0.5), seed=np.int64(7)
    )
    assert json.loads(json.dumps(dataclasses.asdict(params))) == {
        "n": 2, "max_new_tokens": 8, "temperature": 0.5, "top_p": 1.0, "seed": 7,
    }  # fmt: skip
    assert type(params.n) is int and type(params.temperature) is float


def test_remote_engine_and_cache_take_numpy_counts_and_refuse_bad_times():
    remote = RemoteEngine("http://127.0.0.1:1", retries=np.int64(1), timeout_s=np.float32(2))
    assert (remote.retries, remote.timeout_s) == (1, 2.0) and type(remote.retries) is int
    with pytest.raises(ValueError, match=r"timeout_s=0 must be a number of seconds > 0"):
        RemoteEngine("http://127.0.0.1:1", timeout_s=0)
    with pytest.raises(ValueError, match=r"backoff_s='1' must be a number of seconds >= 0"):
        RemoteEngine("http://127.0.0.1:1", backoff_s="1")
    assert VideoEmbeddingCache(max_videos=np.int64(4)).max_videos == 4
    with pytest.raises(ValueError, match="max_videos=True must be an integer >= 1"):
        VideoEmbeddingCache(max_videos=True)


def test_a_dataset_another_run_is_writing_is_named(tmp_path):
    # train_critic read 95 of the 400 episodes a synthesis was recording, without a word
    from rollout.files import lock_folder, release
    from tests.helpers import held_elsewhere

    data = tmp_path / "data"
    data.mkdir()
    assert folder_problem("data", [str(data)]) is None  # no lock file: no writer
    with held_elsewhere(data) as pid:
        assert folder_problem("data", [str(data)]) == (
            f"data: {data} is being written by another run (process {pid}, e.g. synthesize.py): "
            "its episodes so far would be read as the whole dataset. Wait for it to end, or copy "
            "the episodes written so far to another folder"
        )
    assert folder_problem("data", [str(data)]) is None  # it ended: its lock file stays, free
    held = lock_folder(data, "run")  # this process's own (out= is the run dir): not another's
    assert folder_problem("data", [str(data)]) is None
    release(held)
