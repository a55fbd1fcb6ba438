"""experiments/eval_critic.py's config checks: what it refuses before any critic loads (each a
one-line message naming the value and the fix), what it says of the data it reads, and the list
options given bare. The evaluation itself: test_eval_critic.py."""

from __future__ import annotations

import json

import pytest

from tests.experiments.eval_critic_cli import eval_config, run_eval


def test_bad_config_is_a_message_not_a_traceback(dataset, tmp_path):
    done = run_eval(tmp_path, f"data=[{dataset}]", "split=holdout")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().endswith(
        "eval_critic: EvalConfigError: split='holdout' is not a split; pick one of "
        "['train', 'val', 'test', 'all']"
    )
    done = run_eval(tmp_path, f"data=[{dataset}]", "calibration_split=dev")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "EvalConfigError: calibration_split='dev' is not a split" in done.stderr
    done = run_eval(tmp_path, f"data=[{dataset}]", "frames_per_query=0")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "frames_per_query=0 must be an integer >= 1, or null for each critic's" in done.stderr
    done = run_eval(tmp_path, f"data=[{dataset}]", "by_state.Reacher-v5.bins=[2,1]")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "by_state.Reacher-v5={'key': 'fingertip_to_target_cm', 'bins': [2, 1]} must be" in (
        done.stderr
    )
    # a state the episodes do not record: said, and the rest of the evaluation runs
    done = run_eval(tmp_path, f"data=[{dataset}]", "critics=[oracle]", "probes=false",
                "calibration_split=null", "by_state.Reacher-v5.key=nope")  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "by_state.Reacher-v5.key='nope' is not in every episode's state" in (
        done.stdout + done.stderr
    )
    assert "'fingertip_to_target_cm'" in done.stdout + done.stderr  # what there is instead
    assert "## Reading by state" not in (tmp_path / "report.md").read_text()
    tmp_path = tmp_path / "more"  # a new run dir: the one above now holds results
    done = run_eval(tmp_path, "data=[/nowhere]")
    assert "EvalConfigError: data: no episodes in ['/nowhere']" in done.stderr
    done = run_eval(tmp_path, f"data=[{dataset}]", "critics=[magic]")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert (
        "EvalConfigError: critics: unknown critic 'magic'; known critics: ['oracle'," in done.stderr
    )
    # a hub id: said so, with the download that fixes it, as the other scripts say it
    done = run_eval(tmp_path, f"data=[{dataset}]", "critics=[Qwen/Qwen3-VL-2B-Instruct]")
    assert done.returncode == 1 and "it reads as a Hugging Face Hub id, and nothing downloads " \
        "at run time: download the checkpoint on a machine with internet (huggingface-cli " \
        "download Qwen/Qwen3-VL-2B-Instruct --local-dir <folder>)" in done.stderr  # fmt: skip
    # a server URL that is no address: the client's message, not its traceback
    done = run_eval(tmp_path, f"data=[{dataset}]", "critics=['http://']")
    assert done.returncode == 1 and done.stderr.strip().endswith(
        "eval_critic: EvalConfigError: critics: url='http://' is not a server address; give "
        "http://host:port"
    )
    # two checkpoints of one name in different runs would share a column: one would be lost
    done = run_eval(tmp_path, f"data=[{dataset}]", "critics=[/a/outcome/final,/b/outcome/final]")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "EvalConfigError: critics ['outcome/final'] would share a column" in done.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["seed=-1"], "seed=-1 must be an integer >= 0 (it seeds the probes' shuffles), e.g. seed=0"),
        (["probes=off"], "probes='off' must be true or false"),  # it ran every probe
        (["seed=abc"], "seed='abc' must be an integer >= 0"),
        (["by_state=5"], "by_state=5 must map each task to {key: <privileged state name>, bins: "
         "[increasing numbers]}, e.g. by_state={Reacher-v5: {key: fingertip_to_target_cm, "
         "bins: [1, 2, 4]}}, or be null for no reading by state"),
        (["external=[a]"], "external=['a'] must be one folder of labelled videos, e.g. "
         "external=/data/robofail, or null for none"),
        (["external_size=abc"], "external_size='abc' must be an integer in [1, 1024] (the square "
         "size, in pixels, the external videos' frames are resized to), e.g. external_size=128, "
         "or null to keep their own size"),
        (["external_size=0"], "external_size=0 must be an integer in [1, 1024]"),
        # 30 GB frames, and the error blamed the video
        (["external_size=100000"], "external_size=100000 must be an integer in [1, 1024]"),
        # it read the working directory's labels.jsonl
        (["external=''"], "external='' names no folder (it would read the working directory)"),
        # one frame spread from the first to the last is the first: no outcome to judge
        (["failure_frames=1"], "failure_frames=1 must be an integer >= 2: a failure query's clip "
         "is spread from the episode's first frame to its last"),
        (["external_size=-3"], "external_size=-3 must be an integer in [1, 1024]"),
        # a path: said as one, as every script says it (a hub id, with the download that fixes it)
        (["critics=[oracle,outputs/typo/final]"], "critics: critic 'outputs/typo/final': there is "
         "no folder outputs/typo/final on this machine; name a checkpoint folder that exists"),
        (["critics=[{name: ensemble, members: [oracle, nope]}]"], "critics: unknown critic 'nope'; known critics"),
        (["critics=[{label: a}]"], "critics: {'label': 'a'} names no critic"),
        # refused up front, where they failed only after the critics before them had run
        (["critics=[oracle,{name: noisy_oracle, offset_sd: -1}]"], "critics: NoisyOracleCritic "
         "offset_sd=-1 must be a finite number >= 0"),
        (["critics=[{name: oracle, label: o, bogus: 1}]"], "critics: bogus=1: not an option of "
         "the 'oracle' critic; its options are ['needs_frames']"),
        (["critics=[{name: tiny, mode: nope}]"], "critics: mode='nope' is not a critic mode"),
        (["critics=[{name: vlm, model: /nonexistent}]"], "critics: model='/nonexistent': there "
         "is no folder /nonexistent on this machine; name a checkpoint folder that exists"),
        (["critics=[{name: ensemble, members: [oracle, tiny], x: 1}]"], "critics: x=1: not an "
         "option of the 'ensemble' critic"),
        # τ fit on episodes it then scores
        (["split=test", "calibration_split=all"], "calibration_split='all' overlaps split='test': "
         "τ would be fit on the episodes it scores; give a split apart from the evaluated one "
         "(e.g. split=test calibration_split=val), or calibration_split=null to fit no τ"),
        (["split=all"], "calibration_split='val' overlaps split='all'"),
        (["split=val"], "calibration_split='val' overlaps split='val'"),
    ],
)  # fmt: skip
def test_options_are_checked_before_any_critic_loads(dataset, overrides, message):
    import eval_critic as module  # experiments/ is on the test path (pyproject)

    cfg = eval_config(f"data=[{dataset}]", *overrides)
    with pytest.raises(module.EvalConfigError) as err:
        module.check_config(cfg)
    assert str(err.value).startswith(message)


def test_episodes_recorded_twice_are_said(dataset, tmp_path, caplog):
    # a copied folder: its test episodes were scored twice, each counted as two, without a word
    import shutil

    import eval_critic as module

    copy = tmp_path / "copy"
    shutil.copytree(dataset, copy)
    module.check_config(eval_config(f"data=[{dataset},{copy}]"))
    assert caplog.messages == [
        "data: 12 episode ids are in more than one folder (Reacher-v5-000000-expert in "
        f"['{dataset}', '{copy}']): the same task, seed and plan, recorded twice (a copied "
        "folder, or the same seeds at another image size or camera); each counts once per "
        "folder. If that is not meant, list one folder of each (record more episodes with "
        "another first_seed=)"
    ]
    caplog.clear()
    module.check_config(eval_config(f"data=[{dataset}]"))
    assert caplog.messages == []


def test_no_episodes_probe_counts_and_bare_list_options(dataset, tmp_path):
    empty = tmp_path / "empty"
    (empty / "episodes").mkdir(parents=True)  # a folder with no episode in it
    done = run_eval(tmp_path / "run", "critics=[oracle]", f"data=[{empty}]", "split=all",
                "calibration_split=null")  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().endswith(
        f"eval_critic: EvalConfigError: data: no episodes in ['{empty}']; make them with "
        "`python experiments/synthesize.py env=<task> out=<folder>`"
    )
    assert not (tmp_path / "run" / "report.md").exists()  # no report of empty tables
    # 0 probe episodes would report every probe failed on no episode: probes=false runs none
    for count in (0, -1):
        done = run_eval(tmp_path / "run", f"data=[{dataset}]", f"probe_episodes={count}")
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert done.stderr.strip().endswith(
            f"eval_critic: EvalConfigError: probe_episodes={count} must be an integer >= 1 "
            "(expert episodes per task the probes transform); to run no probes, set probes=false"
        )
    # one critic and one folder may be given bare, as a list of one
    done = run_eval(tmp_path / "run", "critics=oracle", f"data={dataset}", "split=all", "probes=false",
                "calibration_split=null", "probe_episodes=0")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert list(metrics["critics"]) == ["oracle"] and metrics["episodes"] == {"Reacher-v5": 4}
    # that run dir now holds results: not written over unless told, refused before hydra writes
    again = run_eval(tmp_path / "run", "critics=[oracle,oracle]")
    assert again.returncode == 1 and again.stderr.strip().endswith(
        f"eval_critic: RunDirError: {tmp_path / 'run'} already holds metrics.json, report.md, "
        "calibration.png from an earlier run; give a new hydra.run.dir=, or overwrite=true to "
        "replace them"
    )
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == metrics
    done = run_eval(tmp_path / "other", f"data=[{dataset},[1]]")
    assert done.returncode == 1 and done.stderr.strip().endswith(
        "eval_critic: EvalConfigError: data: [[1]] are not folders; give dataset folders, e.g. "
        "data=[data/Reacher-v5] or data=[data/Reacher-v5,data/Lift]"
    )
    done = run_eval(tmp_path / "other", f"data=[{dataset}]", "by_state.Reacher-v5.bins=5")
    assert done.returncode == 1 and "Traceback" not in done.stderr  # bins must be a list
    assert "by_state.Reacher-v5={'key': 'fingertip_to_target_cm', 'bins': 5} must be" in done.stderr


def test_one_critic_may_be_given_bare_even_as_a_mapping():
    from omegaconf import OmegaConf

    from rollout.checks import list_option

    one = OmegaConf.create({"critics": {"name": "noisy_oracle", "offset_sd": 0.1}}).critics
    assert list_option(one) == [one]  # not its keys
    assert list_option("oracle") == ["oracle"] and list_option(None) == []
    many = OmegaConf.create(["oracle", {"name": "noisy_oracle"}])
    assert list_option(many) == ["oracle", {"name": "noisy_oracle"}]
