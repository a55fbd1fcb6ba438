"""experiments/eval_critic.py on labelled videos of one's own (``external=``, RoboFail-style):
reading them, scoring them alone, and every label it refuses (split from test_eval_critic.py)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.experiments.eval_critic_cli import eval_config, run_eval, strict_json


def test_external_labelled_videos(tmp_path):
    from critic.data.episodes import EpisodeFormatError
    from critic.data.external import read_labelled_videos
    from critic.data.video import write_video

    folder = tmp_path / "robofail"
    folder.mkdir()
    frames = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    for name in ("a", "b"):
        write_video(folder / f"{name}.mkv", frames, 10.0, "ffv1")
    (folder / "labels.jsonl").write_text(
        '{"video": "a.mkv", "instruction": "Pick the cup.", "success": true}\n'
        '{"video": "b.mkv", "instruction": "Pick the cup.", "success": false, '
        '"failure_type": "stall", "failure_time_s": 0.3}\n'
    )
    episodes = read_labelled_videos(folder, size=28)
    assert [e.frames["video"].shape for e in episodes] == [(6, 28, 28, 3)] * 2
    assert episodes[1].failure_type == "stall" and episodes[1].failure_step == 3  # 0.3 s × 10 fps
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "calibration.png").write_bytes(b"an earlier run's plot")
    done = run_eval(tmp_path / "run", "data=[]", f"external={folder}", "critics=[oracle]")
    assert done.returncode == 1 and "already holds calibration.png" in done.stderr  # not ours
    done = run_eval(tmp_path / "run", "data=[]", f"external={folder}", "critics=[oracle]",
                "overwrite=true")  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    # no seeds, no split: "the val split holds no external episode ... record more" was no fix
    assert "no external episode" not in done.stdout + done.stderr
    metrics = strict_json((tmp_path / "run" / "metrics.json").read_text())
    external = metrics["critics"]["oracle"]["external"]
    assert external["failure"]["accuracy"] == 1.0 and "progress" not in external
    # no progress to read in a labelled video: the oracle's last-frame readings are unreadable,
    # not "achieved 0" (which called every video a sure failure), so it has no achieved detector
    assert "achieved" not in external["failure"]
    # nothing to plot: no calibration.png, an earlier run's removed, and none linked
    assert not (tmp_path / "run" / "calibration.png").exists()
    assert "calibration.png" not in (tmp_path / "run" / "report.md").read_text()
    # successes alone: no failure to recall, AUROC, type or delay to read; null in the JSON,
    # n/a in the report (recall read 0.00, a total miss, for a critic right on every video)
    (folder / "labels.jsonl").write_text(
        '{"video": "a.mkv", "instruction": "Pick the cup.", "success": true}\n'
        '{"video": "b.mkv", "instruction": "Pick the cup.", "success": true}\n'
    )
    done = run_eval(tmp_path / "run2", "data=[]", f"external={folder}", "critics=[oracle]")
    assert done.returncode == 0, done.stderr[-3000:]
    failure = strict_json((tmp_path / "run2" / "metrics.json").read_text())["critics"]["oracle"][
        "external"
    ]["failure"]
    assert failure["accuracy"] == 1.0
    undefined = ("precision", "recall", "f1", "auroc", "type_accuracy", "detection_delay_s",
                 "detected_in_time")  # fmt: skip
    assert {key: failure[key] for key in undefined} == dict.fromkeys(undefined)
    report = (tmp_path / "run2" / "report.md").read_text()
    assert (
        "| oracle | external | 2 | 1.00 | 1.00 | n/a | n/a | 1.00 | n/a | n/a | n/a | n/a | n/a "
        in (report)
    )
    # the τ columns say why they are empty, and the progress table is no header over nothing
    assert (
        "Your own videos (`external`) give no `split` in their labels.jsonl, so they have no "
        "calibration split and their rows have no `τ`." in report
    )
    progress = report.split("## Progress\n\n", 1)[1].split("\n## ", 1)[0]
    assert "| critic |" not in progress
    assert progress.startswith("No expert or planned-failure episode with per-frame progress here")
    # external videos with the data folders at their default: data=[] scores the videos alone
    done = run_eval(tmp_path / "run3", f"data=[{tmp_path / 'none'}]", f"external={folder}")
    assert done.returncode == 1 and done.stderr.strip().endswith(
        f"eval_critic: EvalConfigError: data: no episodes in ['{tmp_path / 'none'}']; make them "
        "with `python experiments/synthesize.py env=<task> out=<folder>`, or give data=[] to "
        "score the external videos alone"
    )
    (folder / "labels.jsonl").write_text(
        '{"video": "c.mkv", "instruction": "x", "success": true}\n'
    )
    with pytest.raises(EpisodeFormatError, match=r"c.mkv: no such video file"):
        read_labelled_videos(folder)
    (folder / "labels.jsonl").write_text('{"video": "a.mkv", "success": "yes"}\n')
    with pytest.raises(EpisodeFormatError, match=r"labels.jsonl:1: missing \['instruction'\]"):
        read_labelled_videos(folder)
    # each field's type, a video labelled twice, and text that is not UTF-8: named, by line
    line = '{"video": "a.mkv", "instruction": "x", "success": false'
    for extra, message in (
        (', "failure_time_s": "1.2"}', "labels.jsonl:1: failure_time_s='1.2' must be a number"),
        (', "failure_time_s": -1}', "labels.jsonl:1: failure_time_s=-1 must be a number"),
        # 6 frames at 10 fps: 0.6 s (it was clipped to the last frame: an instant detection)
        (', "failure_time_s": 0.9}', "labels.jsonl:1: failure_time_s=0.9 is past the end of "
         "'a.mkv' \\(0.6 s long\\); give the time of the failure within the video"),
        (', "failure_type": 3}', "labels.jsonl:1: failure_type=3 must be a name"),
        ('}\n{"video": "a.mkv", "instruction": "x", "success": true}',
         "labels.jsonl:2: 'a.mkv' is labelled again \\(the same file as line 1\\)"),
    ):  # fmt: skip
        (folder / "labels.jsonl").write_text(line + extra + "\n")
        with pytest.raises(EpisodeFormatError, match=message):
            read_labelled_videos(folder)
    (folder / "labels.jsonl").write_text(
        '{"video": "a.mkv", "instruction": "put it in the <video> box", "success": true}\n'
    )
    with pytest.raises(EpisodeFormatError, match=r"labels\.jsonl:1: instruction='put it in the "
                       r"<video> box' holds '<video>', the prompt's own syntax"):  # fmt: skip
        read_labelled_videos(folder)
    (folder / "labels.jsonl").write_text('{"video": null, "instruction": "x", "success": true}\n')
    with pytest.raises(EpisodeFormatError, match="video=None must be a file name relative to"):
        read_labelled_videos(folder)
    (folder / "labels.jsonl").write_bytes(b'{"video": "a.mkv", "instruction": "caf\xe9", '
                                          b'"success": true}\n')  # fmt: skip
    with pytest.raises(EpisodeFormatError, match="not UTF-8 text"):
        read_labelled_videos(folder)


def test_external_videos_past_episodes_per_task_are_named_not_dropped_silently(tmp_path, capsys):
    # 45 labelled, 40 scored: the last 5 (the only successes) were dropped without a word
    import eval_critic as module  # experiments/ is on the test path (pyproject)

    from critic.data.video import write_video

    frames = np.zeros((3, 16, 16, 3), dtype=np.uint8)
    for name in ("a", "b", "c"):
        write_video(tmp_path / f"{name}.mkv", frames, 10.0, "ffv1")
    (tmp_path / "labels.jsonl").write_text(
        "".join(f'{{"video": "{n}.mkv", "instruction": "x", "success": true}}\n' for n in "abc")
    )
    cfg = eval_config("data=[]", f"external={tmp_path}", "episodes_per_task=2", "external_size=16")
    assert [e.episode_id for e in module.load_episodes(cfg)["external"]] == ["a", "b"]
    assert capsys.readouterr().err == (
        "eval_critic: external: scoring the first 2 of the 3 labelled videos "
        "(episodes_per_task=2); give episodes_per_task=3 to score them all\n"
    )
    (tmp_path / "labels.jsonl").write_text("\n \n")
    with pytest.raises(module.EvalConfigError) as err:  # it said to synthesise more episodes
        module.load_episodes(cfg)
    assert str(err.value) == (
        f"external={str(tmp_path)!r}: its labels.jsonl labels no video; give one "
        '{"video", "instruction", "success"} object per line'
    )


def test_external_videos_with_splits_get_a_threshold_fit_on_their_val_videos(tmp_path):
    # they had no seeds, so no calibration split: their rows never had a τ
    import eval_critic as module  # experiments/ is on the test path (pyproject)

    from critic.data.episodes import EpisodeFormatError
    from critic.data.external import read_labelled_videos
    from critic.data.video import write_video

    folder = tmp_path / "robofail"
    folder.mkdir()
    frames = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    for name in ("a", "b", "c", "d", "e"):
        write_video(folder / f"{name}.mkv", frames, 10.0, "ffv1")
    rows = [("a", "val", True), ("b", "val", False), ("c", "test", True), ("d", "test", False),
            ("e", "train", False)]  # fmt: skip
    (folder / "labels.jsonl").write_text("".join(
        f'{{"video": "{v}.mkv", "instruction": "Pick the cup.", "success": {str(ok).lower()}, '
        f'"split": "{split}"}}\n' for v, split, ok in rows
    ))  # fmt: skip
    assert [e.episode_id for e in read_labelled_videos(folder, split="val")] == ["a", "b"]
    assert len(read_labelled_videos(folder)) == 5  # no split asked: every video
    cfg = eval_config("data=[]", f"external={folder}", "external_size=16")
    assert [e.episode_id for e in module.load_episodes(cfg)["external"]] == ["c", "d"]
    assert [e.episode_id for e in module.load_episodes(cfg, "val")["external"]] == ["a", "b"]
    done = run_eval(tmp_path / "run", "data=[]", f"external={folder}", "critics=[oracle]")
    assert done.returncode == 0, done.stderr[-3000:]
    failure = strict_json((tmp_path / "run" / "metrics.json").read_text())["critics"]["oracle"][
        "external"
    ]["failure"]
    assert failure["episodes"] == 2 and failure["threshold"] is not None
    assert failure["threshold_accuracy"] == 1.0
    assert "have no `τ`" not in (tmp_path / "run" / "report.md").read_text()
    # val videos of one class: no τ, and the report says why, not that the labels give no split
    (folder / "labels.jsonl").write_text(
        (folder / "labels.jsonl").read_text().replace('"b.mkv", "instruction": "Pick the cup.", '
                                                      '"success": false', '"b.mkv", "instruction": '
                                                      '"Pick the cup.", "success": true')
    )  # fmt: skip
    done = run_eval(tmp_path / "run1", "data=[]", f"external={folder}", "critics=[oracle]")
    assert done.returncode == 0, done.stderr[-3000:]
    report = (tmp_path / "run1" / "report.md").read_text()
    assert "give no `split`" not in report and (
        'Your own videos (`external`) have no `τ`: those whose labels.jsonl gives `"split": '
        '"val"` are not both successes and failures, or none was read' in report
    )
    (folder / "labels.jsonl").write_text("".join(
        f'{{"video": "{v}.mkv", "instruction": "Pick the cup.", "success": {str(ok).lower()}, '
        f'"split": "{split}"}}\n' for v, split, ok in rows
    ))  # fmt: skip
    # a split on some lines alone, or one that is not a split, is refused by line
    lines = (folder / "labels.jsonl").read_text().splitlines()
    (folder / "labels.jsonl").write_text(
        lines[0] + "\n" + lines[1].replace(', "split": "val"', "") + "\n"
    )
    with pytest.raises(EpisodeFormatError, match=r"labels.jsonl:2: no split, where line 1 gives "
                       "one; give every line its split, or none"):  # fmt: skip
        read_labelled_videos(folder)
    (folder / "labels.jsonl").write_text(lines[0].replace('"val"', '"dev"') + "\n")
    with pytest.raises(EpisodeFormatError, match=r"labels.jsonl:1: split='dev' is not a split"):
        read_labelled_videos(folder)
    # no video of the scored split: said, where it read as "synthesise more episodes"
    (folder / "labels.jsonl").write_text("\n".join(lines[:2]) + "\n")
    with pytest.raises(module.EvalConfigError, match=r"no video of split=test in its labels.jsonl"):
        module.load_episodes(cfg)


def test_labels_edited_during_the_run_do_not_stop_its_report(tmp_path, monkeypatch):
    # the report read labels.jsonl again after every critic had run, to word one sentence: a line
    # added meanwhile (labelling the next run's videos) stopped the run with the labels' error,
    # report.md unwritten, and with overwrite=true the earlier run's files put back over this one's
    import eval_critic as module

    from critic.data.video import write_video

    folder = tmp_path / "robofail"
    folder.mkdir()
    frames = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    for name in ("a", "b"):
        write_video(folder / f"{name}.mkv", frames, 10.0, "ffv1")
    labels = folder / "labels.jsonl"
    labels.write_text(
        '{"video": "a.mkv", "instruction": "Pick the cup.", "success": true}\n'
        '{"video": "b.mkv", "instruction": "Pick the cup.", "success": false}\n'
    )
    evaluate = module.evaluate_critic

    def evaluate_then_label_more(*args, **kwargs):
        result = evaluate(*args, **kwargs)
        with labels.open("a") as out:  # a line of the next run's, with a split: mixed, refused
            out.write(
                '{"video": "a.mkv", "instruction": "Pick.", "success": true, "split": "val"}\n'
            )
        return result

    monkeypatch.setattr(module, "evaluate_critic", evaluate_then_label_more)
    cfg = eval_config("data=[]", f"external={folder}", "critics=[oracle]")
    module.run(cfg, tmp_path / "run")
    report = (tmp_path / "run" / "report.md").read_text()
    assert "Your own videos (`external`) give no `split` in their labels.jsonl" in report
