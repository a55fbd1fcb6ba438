"""experiments/eval_critic.py end to end on a tiny synthesised Reacher dataset: the oracle and a
tiny VLM side by side, probes, and typed errors (its config checks: test_eval_critic_config.py;
labelled videos of one's own: test_eval_critic_external.py)."""

from __future__ import annotations

import json

import pytest

from tests.experiments.eval_critic_cli import eval_config, run_eval, strict_json


def test_oracle_and_tiny_vlm_side_by_side(dataset, tmp_path):
    # the train split's first 4 (seeds 1, 2, 3, 4); τ is fit on the test split apart from it
    # (seeds 0 and 5, a success and a failure: the val split's one episode is one class, on
    # which no threshold is fit)
    done = run_eval(tmp_path, f"data=[{dataset}]", "split=train", "calibration_split=test",
                "critics=[oracle,{name: tiny, max_new_tokens: 4},"
                "{name: tiny-qwen3vl, max_new_tokens: 4}]")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = strict_json((tmp_path / "metrics.json").read_text())
    assert metrics["episodes"] == {"Reacher-v5": 4}
    oracle = metrics["critics"]["oracle"]["Reacher-v5"]
    assert oracle["progress"]["expert"]["mae"] == 0.0
    assert oracle["failure"]["accuracy"] == 1.0
    # τ is fit on the test split and scored here: the oracle's probabilities are 0 or 1
    assert 0.0 < oracle["failure"]["threshold"] < 1.0
    assert oracle["failure"]["threshold_accuracy"] == 1.0
    # and from the last frame's progress: 1 for a success, below it for a failure
    assert oracle["failure"]["progress"]["threshold_accuracy"] == 1.0
    assert oracle["failure"]["progress"]["auroc"] == 1.0
    called = oracle["failure"]["progress"]["judged_failure_by_type"]
    # no success called a failure, every failure type caught
    assert called.pop("success") == 0.0 and set(called.values()) == {1.0}
    # and from the probability that the task is achieved at the last frame, with its own τ
    assert oracle["failure"]["achieved"]["threshold_accuracy"] == 1.0
    assert 0.0 < oracle["failure"]["achieved"]["threshold"] < 1.0
    assert all(p["passed"] for p in oracle["probes"].values())
    tiny = metrics["critics"]["tiny"]["Reacher-v5"]
    assert 0.0 <= tiny["progress"]["expert"]["mae"] <= 1.0
    assert tiny["frames_per_query"] == 2  # as asked; null: the critic's own clip length
    assert set(tiny["probes"]) == {"static", "reversed", "shuffled", "frozen"}
    qwen3 = metrics["critics"]["tiny-qwen3vl"][
        "Reacher-v5"
    ]  # Qwen3-VL's architecture, the same way
    assert 0.0 <= qwen3["progress"]["expert"]["mae"] <= 1.0 and set(qwen3["probes"]) == set(
        tiny["probes"]
    )
    report = (tmp_path / "report.md").read_text()
    assert "| oracle | Reacher-v5 |" in report and "| tiny | Reacher-v5 |" in report
    assert "| tiny-qwen3vl | Reacher-v5 |" in report
    assert "### Failure from the last frame" in report and "success 0.00" in report
    assert "| oracle | Reacher-v5 | achieved | 4 |" in report
    assert ("| tiny | Reacher-v5 | achieved |" in report) == ("achieved" in tiny["failure"])
    assert (tmp_path / "calibration.png").stat().st_size > 5_000
    assert "# Critic evaluation" in done.stdout
    # the reading by the fingertip's distance to the target (the config's by_state): the
    # oracle reads the truth in every bin, and P(achieved) is 1 exactly where the task is
    rows = oracle["by_state"]["rows"]
    assert oracle["by_state"]["key"] == "fingertip_to_target_cm"
    queried = sum(group["frames"] for group in oracle["progress"].values())  # expert + failure
    assert sum(r["frames"] for r in rows) == queried
    assert all(r["progress"] == pytest.approx(r["true_progress"]) for r in rows)
    assert rows[0]["high"] == 1.0 and rows[0]["achieved"] == 1.0  # within 1 cm: success
    assert rows[-1]["low"] == 10.0 and rows[-1]["achieved"] == 0.0
    assert "## Reading by state" in report and "**oracle, Reacher-v5**, by `fingertip" in report
    assert "| ≥ 10 |" in report


def test_a_critic_is_queried_at_its_clip_length_for_each_task(dataset):
    from critic.data.episodes import iter_episodes
    from tests.helpers import RecordingCritic

    class PerTask(RecordingCritic):  # trained on 1-frame Reacher clips, 8 frames elsewhere
        def clip_frames_for(self, task):
            return 1 if task == "Reacher-v5" else 8

    import eval_critic as module  # experiments/ is on the test path (pyproject)

    cfg = eval_config("probes=false", "delay_points=0", "stride=4")
    episodes = list(iter_episodes(dataset))[:2]
    critic = PerTask()
    row = module.evaluate_critic(critic, {"Reacher-v5": episodes}, cfg)["Reacher-v5"]
    assert row["frames_per_query"] == 1
    assert {len(q.frames) for batch in critic.batches for q in batch} == {1}


def test_probes_without_expert_episodes_read_n_a_not_fail(dataset):
    import eval_critic as module  # experiments/ is on the test path (pyproject)

    from critic.data.episodes import iter_episodes
    from critic.oracle import OracleCritic

    cfg = eval_config("delay_points=0", "stride=4", "probe_episodes=2", "calibration_split=null")
    failures = [e for e in iter_episodes(dataset) if not e.success][:2]  # no expert to probe
    results = {"oracle": module.evaluate_critic(OracleCritic(), {"Reacher-v5": failures}, cfg)}
    assert {p["passed"] for p in results["oracle"]["Reacher-v5"]["probes"].values()} == {None}
    from eval_report import report_lines

    report = "\n".join(report_lines(results, cfg))
    # the progress row: nothing of experts, the failures' MAE with their own readable share (the
    # one column read the experts' share, n/a here beside a failure MAE read on every frame)
    progress = next(line for line in report.splitlines() if line.startswith("| oracle |"))
    assert progress.startswith("| oracle | Reacher-v5 | n/a | n/a | n/a | n/a | 0.00 |")
    assert progress.endswith("| 1.00 |")
    probes = "n/a (no expert episode with an active part of 4 frames)"
    assert f"| oracle | Reacher-v5 | {probes} | {probes} | {probes} | {probes} |" in report
    assert "FAIL" not in report
    # probe_episodes counts the experts a probe can read: an expert achieved at its second frame
    # (an active part of 2) listed first was taken, skipped, and left none probed
    import dataclasses

    import numpy as np

    experts = [e for e in iter_episodes(dataset) if e.expert]
    quick = dataclasses.replace(experts[0], progress=np.minimum(1.0, 2 * experts[0].progress))
    quick.progress[1:] = 1.0
    cfg = eval_config("delay_points=0", "stride=4", "probe_episodes=1", "calibration_split=null")
    row = module.evaluate_critic(OracleCritic(), {"Reacher-v5": [quick, *experts[1:]]}, cfg)
    assert {p["episodes"] for p in row["Reacher-v5"]["probes"].values()} == {1}


def test_a_voc_that_leaves_episodes_out_says_of_how_many_it_is_the_mean():
    from eval_report import _voc

    assert _voc({"voc": 0.5, "voc_episodes": 2, "episodes": 3}) == "0.50 (2 of 3)"
    assert _voc({"voc": 1.0, "voc_episodes": 3, "episodes": 3}) == "1.00"
    assert _voc({"voc": float("nan"), "voc_episodes": 0, "episodes": 1}) == "n/a (0 of 1)"
    assert _voc({}) == "n/a"  # no such episodes


def test_a_critic_that_fails_keeps_the_results_before_it(dataset, tmp_path):
    # the second critic is a server nobody listens on: an address that passes every check made
    # before any critic loads, and fails as it is built, after the oracle has its results
    import shutil
    import socket

    import eval_critic as module

    from critic.weights import SHIPPED

    broken = tmp_path / "broken"
    broken.mkdir()  # a run's folder, not its <stage>/final: refused before the oracle runs
    with pytest.raises(module.EvalConfigError) as err:
        module.check_config(eval_config(f"data=[{dataset}]", f"critics=[oracle,{broken}]"))
    assert str(err.value).startswith(
        f"critics: model='{broken}' is a folder but not a checkpoint (it holds no config.json)"
    )
    broken.rmdir()
    # a checkpoint whose weights file is not the real one (a Git LFS pointer): refused too
    shutil.copytree(SHIPPED["viscritic-small"], broken)
    (broken / "model.safetensors").write_bytes(b"version https://git-lfs.github.com/spec/v1")
    with pytest.raises(module.EvalConfigError) as err:
        module.check_config(eval_config(f"data=[{dataset}]", f"critics=[oracle,{broken}]"))
    assert str(err.value).startswith(
        f"critics: {broken / 'model.safetensors'} is damaged or not the real file ("
    )
    with socket.socket() as free:  # a port nobody listens on
        free.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{free.getsockname()[1]}"
    run = tmp_path / "run"
    done = run_eval(run, f"data=[{dataset}]", "split=train", "calibration_split=null",
                "probes=false", f"critics=[oracle,{{name: '{url}', label: remote}}]")  # fmt: skip
    assert done.returncode == 1, done.stderr[-3000:]
    error = done.stderr.strip().splitlines()[-1].removeprefix("eval_critic: ")
    assert error.startswith(f"ServerUnavailableError: the critic server at {url} did not answer")
    metrics = strict_json((run / "metrics.json").read_text())
    assert list(metrics["critics"]) == ["oracle"]
    assert metrics["failed"] == {"critic": "remote", "error": error}
    report = (run / "report.md").read_text()
    assert "(a one-pass readout's top digit); with no calibration split, no `τ` is fit." in report
    assert f"**Incomplete:** critic `remote` failed ({error}); the tables hold" in report
    assert "| oracle | Reacher-v5 |" in report
    assert "critic remote failed; metrics.json and report.md in" in done.stdout + done.stderr


def test_policy_rollouts_are_their_own_group_not_experts(tmp_path):
    """A learner's successful rollout has no failure, yet is not an expert's episode: the progress
    table reports it apart, and the probes (built from expert episodes) never use it."""
    from stable_baselines3 import SAC

    from envs import make_task_env
    from envs.plans import plan_episodes, plan_policy_episodes
    from envs.synth import synthesize

    env = make_task_env("Reacher-v5")
    SAC("MlpPolicy", env, seed=0, policy_kwargs={"net_arch": [8]}).save(tmp_path / "policy.zip")
    env.close()
    data = tmp_path / "data"
    plans = plan_episodes("Reacher-v5", 4, 0.5) + plan_policy_episodes(
        "Reacher-v5", [str(tmp_path / "policy.zip")], 3, first_seed=100, hindsight=True
    )  # hindsight goals: some rollouts end as successes, with failure_type None
    rows = synthesize(plans, data, progress_bar=False, every=5, image_size=28)
    assert any(r["success"] for r in rows if r["policy"] is not None)  # the case this tests
    done = run_eval(tmp_path / "run", f"data=[{data}]", "split=all", "critics=[oracle,noisy_oracle]",
                "episodes_per_task=7", "probe_episodes=7", "calibration_split=null")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    critics = json.loads((tmp_path / "run" / "metrics.json").read_text())["critics"]
    oracle = critics["oracle"]
    progress = oracle["Reacher-v5"]["progress"]
    assert progress["expert"]["episodes"] == 2 and progress["failure"]["episodes"] == 2
    assert progress["policy"]["episodes"] == 3 and progress["policy"]["mae"] == 0.0
    assert {p["episodes"] for p in oracle["Reacher-v5"]["probes"].values()} == {2}  # the experts
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Saved policies' rollouts" in report and "| oracle | Reacher-v5 | 3 | 0.00 |" in report
    assert progress["policy"]["offset_sd"] == 0.0  # the oracle reads the truth
    assert progress["policy"]["within_sd"] == 0.0
    assert "| offset SD | within SD | readable |" in report
    # the noisy oracle's per-episode offset (SD 0.2 by default) is what offset SD reports
    noisy = critics["noisy_oracle"]["Reacher-v5"]["progress"]["policy"]
    assert noisy["offset_sd"] > 0.0 and noisy["mae"] > 0.0
    # the failure detector still scores every episode by what happened
    assert oracle["Reacher-v5"]["failure"]["episodes"] == 7


def test_episodes_past_the_cap_are_named_by_folder(dataset, tmp_path, capsys):
    # the first folder filled episodes_per_task, and a second folder of the task (a learner's
    # rollouts beside the scripted episodes) was never scored, without a word
    import shutil

    import eval_critic as module  # experiments/ is on the test path (pyproject)

    second = tmp_path / "second"
    shutil.copytree(dataset, second)
    cfg = eval_config(f"data=[{dataset},{second}]", "split=all", "episodes_per_task=10")
    episodes = module.load_episodes(cfg)["Reacher-v5"]
    assert len(episodes) == 10
    assert capsys.readouterr().err == (
        "eval_critic: Reacher-v5: scoring the first 10 episodes of split=all in data= order, 14 "
        f"more left out (2 of {dataset}, 12 of {second}; episodes_per_task=10); give "
        "episodes_per_task=24 to score them all\n"
    )
    module.load_episodes(eval_config(f"data=[{dataset}]", "split=all", "episodes_per_task=12"))
    assert capsys.readouterr().err == ""  # all scored: nothing to say
    # the calibration split's episodes only fit τ: its cut is not a scoring note
    cfg = eval_config(f"data=[{dataset},{second}]", "split=test", "episodes_per_task=1")
    module.load_episodes(cfg, split="val")
    assert capsys.readouterr().err == ""


def test_a_calibration_split_of_one_class_fits_no_threshold(caplog):
    # a small dataset whose val split held only failures: the threshold fit there lay below
    # every score, and the perfect oracle called every test success a failure
    from types import SimpleNamespace

    from eval_critic import one_class_left_out

    def episodes(*successes):
        return [SimpleNamespace(success=s) for s in successes]

    mixed, failures = episodes(True, False), episodes(False, False)
    cfg = SimpleNamespace(calibration_split="val")
    kept = one_class_left_out({"Reacher-v5": mixed, "CheetahRun-v1": failures}, cfg)
    assert kept == {"Reacher-v5": mixed}
    assert caplog.messages == [
        "the val split's 2 CheetahRun-v1 episodes are all failures: no failure threshold is fit "
        "for CheetahRun-v1 (the thresholded rows read n/a); give it both kinds, with more "
        "episodes (episodes_per_task=, or more recorded) or another calibration_split="
    ]
    # a task the split holds no episode of was left out without a word (one episode, seed 0)
    caplog.clear()
    assert one_class_left_out({"Reacher-v5": mixed}, cfg, ["Reacher-v5", "Lift"]) == {
        "Reacher-v5": mixed
    }
    assert caplog.messages == [
        "the val split holds no Lift episode: no failure threshold is fit for Lift (the "
        "thresholded rows read n/a); record more episodes of it (its seeds decide the split) or "
        "give another calibration_split="
    ]


def test_overwrite_stopped_before_a_critic_finished_puts_the_earlier_run_back(
    dataset, tmp_path, monkeypatch
):
    # the earlier metrics.json stayed beside the stopped run's record, which named other options
    import eval_critic as module  # experiments/ is on the test path (pyproject)

    import critic.factory

    earlier = {"metrics.json": '{"earlier": true}', "report.md": "# earlier"}
    for name, text in earlier.items():
        (tmp_path / name).write_text(text)

    def interrupted(spec):
        raise KeyboardInterrupt

    cfg = eval_config(f"data=[{dataset}]", "critics=[oracle]", "overwrite=true", "probes=false",
                      "episodes_per_task=2")  # fmt: skip
    monkeypatch.setattr(critic.factory, "make_critic", interrupted)
    with pytest.raises(KeyboardInterrupt):
        module.run(cfg, tmp_path)
    assert {n: (tmp_path / n).read_text() for n in earlier} == earlier
    assert not (tmp_path / ".overwritten").exists()
    monkeypatch.undo()
    # stopped while its results are written (a full disk, a Ctrl-C at the plot): the earlier
    # run stayed aside beside half of this run's files, and the next run was refused

    def half_written(results, by_task, cfg, out_dir, failed=None, external_splits=False):
        (out_dir / "metrics.json").write_text("half of this run's")
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "write_results", half_written)
    with pytest.raises(KeyboardInterrupt):
        module.run(cfg, tmp_path)
    assert {n: (tmp_path / n).read_text() for n in earlier} == earlier
    assert not (tmp_path / ".overwritten").exists()
    monkeypatch.undo()  # a run that finishes replaces the earlier one, and keeps nothing aside
    module.run(cfg, tmp_path)
    assert "earlier" not in (tmp_path / "metrics.json").read_text()
    assert not (tmp_path / ".overwritten").exists()


def test_overwrite_that_fails_before_a_critic_finished_keeps_the_earlier_record_too(
    dataset, tmp_path
):
    # the earlier metrics.json stayed, but beside this run's .hydra record (other options)
    first = run_eval(tmp_path, f"data=[{dataset}]", "critics=[oracle]", "probes=false")
    assert first.returncode == 0, first.stderr[-3000:]
    metrics = (tmp_path / "metrics.json").read_text()
    record = (tmp_path / ".hydra" / "overrides.yaml").read_text()
    (tmp_path / "empty").mkdir()  # a folder that is no checkpoint: refused when it loads
    failed = run_eval(tmp_path, f"data=[{dataset}]", f"critics=[{tmp_path / 'empty'}]",
                      "probes=false", "overwrite=true")  # fmt: skip
    assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr[-3000:]
    assert (tmp_path / "metrics.json").read_text() == metrics
    assert (tmp_path / ".hydra" / "overrides.yaml").read_text() == record
    assert not (tmp_path / ".overwritten").exists()


def test_no_verdict_read_fits_no_verdict_threshold(dataset):
    # every verdict unreadable: every score 0.5, and a τ of 0.4 or 0.6, fit on nothing read, was
    # printed beside the verdict row
    import eval_critic as module  # experiments/ is on the test path (pyproject)

    from critic.base import FailureVerdict, ParseStatus
    from critic.data.episodes import iter_episodes
    from critic.oracle import OracleCritic

    class Mute(OracleCritic):
        def detect_failure(self, queries):
            return [FailureVerdict(None, status=ParseStatus.NO_ANSWER) for _ in queries]

    episodes = list(iter_episodes(dataset))
    fit = [e for e in episodes if e.success][:1] + [e for e in episodes if not e.success][:1]
    cfg = eval_config("probes=false", "delay_points=0", "stride=4")
    row = module.evaluate_critic(Mute(), {"Reacher-v5": fit}, cfg, {"Reacher-v5": fit})
    failure = row["Reacher-v5"]["failure"]
    assert "threshold" not in failure and failure["readable"] == 0.0  # the report: n/a
    assert "threshold" in failure["achieved"]  # the last frame's reading still fits


def test_a_folder_of_an_older_recording_is_warned_of_in_evaluation_and_training(dataset, tmp_path):
    # both read it without a word: its labels or chains of thought are the old ones
    import json
    import shutil

    from tests.experiments.train_critic_cli import run_train

    old = tmp_path / "old"
    shutil.copytree(dataset, old)
    manifest = json.loads((old / "manifest.json").read_text())
    manifest["tasks"]["Reacher-v5"].pop("recording")  # as version 1 wrote it
    (old / "manifest.json").write_text(json.dumps(manifest))
    said = f"{old}: its Reacher-v5 episodes were recorded by version 1 of the recording"
    done = run_eval(tmp_path / "eval", f"data=[{old}]", "critics=[oracle]")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"eval_critic: {said}" in done.stderr
    done = run_train(tmp_path / "train", f"data=[{old}]", "pipeline=[sft]", "stages.sft.steps=1",
                     "stages.sft.batch_size=2", "eval_every=0")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"train_critic: {said}" in done.stderr
    done = run_eval(tmp_path / "eval2", f"data=[{dataset}]", "critics=[oracle]")
    assert "recorded by version" not in done.stderr
