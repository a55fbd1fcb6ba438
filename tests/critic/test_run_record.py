"""Where a GRPO stage's KL reference comes from, and its record (critic.train.run_record), read
in-process. tests/experiments/test_train_critic.py runs the same through train_critic.py: a
resumed stage's KL figures repeat the uninterrupted run's."""

import json

import pytest

from critic.train.config import TrainConfigError
from critic.train.run_record import KL_RECORD, kl_reference_source, record_kl_reference


def test_a_new_stage_pulls_toward_where_it_started_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sft" / "final").mkdir(parents=True)
    # a folder, spelt relative: the record names it wherever the next resume runs from
    assert kl_reference_source("pretext", 0.1, "sft/final") == str(tmp_path / "sft" / "final")
    # a name that is not a folder here (a shipped critic, a hub id) is kept as given
    assert kl_reference_source("pretext", 0.1, "viscritic-small") == "viscritic-small"


def test_a_resume_reads_the_record_and_a_missing_damaged_or_gone_one_says_what_to_do(tmp_path):
    start = tmp_path / "sft" / "final"
    start.mkdir(parents=True)
    checkpoint = tmp_path / "run" / "pretext" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    record = checkpoint.parent / KL_RECORD
    with pytest.raises(TrainConfigError) as missing:
        kl_reference_source("pretext", 0.05, "elsewhere", resume=checkpoint)
    assert str(missing.value) == (
        f"resuming pretext with grpo.kl_coef=0.05: {record} is missing, so the weights the stage "
        "started from (the KL term's reference) are not known; resume with grpo.kl_coef=0, or "
        "run the stage again"
    )
    record.write_text(json.dumps({"from": str(start)}))
    # the record, not what this resume's pipeline= and model= would start from
    assert kl_reference_source("pretext", 0.05, "elsewhere", resume=checkpoint) == str(start)
    record.write_text(json.dumps({"to": str(start)}))
    with pytest.raises(TrainConfigError, match=r"is damaged \(KeyError: 'from'\); it names"):
        kl_reference_source("pretext", 0.05, "elsewhere", resume=checkpoint)
    record.write_text(json.dumps({"from": str(tmp_path / "gone")}))
    with pytest.raises(TrainConfigError, match=f"needs the weights it started from, {tmp_path}/"):
        kl_reference_source("pretext", 0.05, "elsewhere", resume=checkpoint)
    record.write_text(json.dumps({"from": "viscritic-small"}))  # a name, not a path: loaded as one
    assert kl_reference_source("pretext", 0.05, "elsewhere", resume=checkpoint) == (
        "viscritic-small"
    )


def test_the_record_is_written_by_a_run_and_left_by_a_resume_in_its_own_run(tmp_path):
    stage = tmp_path / "run" / "pretext"
    record_kl_reference(stage, "/ckpt/a")
    assert json.loads((stage / KL_RECORD).read_text()) == {"from": "/ckpt/a"}
    # a resume in the same run: read, never rewritten (a rewrite cut short would lose it)
    record_kl_reference(stage, "/ckpt/other", resume=stage / "checkpoint-1")
    assert json.loads((stage / KL_RECORD).read_text()) == {"from": "/ckpt/a"}
    # a resume into another run dir writes its own, for the resume of that run
    other = tmp_path / "resumed" / "pretext"
    record_kl_reference(other, "/ckpt/a", resume=stage / "checkpoint-1")
    assert json.loads((other / KL_RECORD).read_text()) == {"from": "/ckpt/a"}


def test_a_checkpoint_from_before_an_option_existed_resumes_at_that_options_old_value(tmp_path):
    # grpo.updates came after runs were recorded: a checkpoint without it ran with 1, so a resume
    # at 1 continues it, and one at 2 is a change
    from hydra import compose, initialize_config_dir

    from critic.train.run_record import RUN_RECORD, resume_problem, run_record
    from tests.configs.test_compose import CONFIGS

    checkpoint = tmp_path / "run" / "pretext" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(config_name="train_critic", overrides=[f"resume={checkpoint}"])
        changed = compose(
            config_name="train_critic", overrides=[f"resume={checkpoint}", "grpo.updates=2"]
        )
        labels = compose(
            config_name="train_critic", overrides=[f"resume={checkpoint}", "top_digit=achieved"]
        )
    options = run_record(cfg)
    del options["grpo"]["updates"], options["top_digit"]  # top_digit: round before it existed
    (checkpoint / RUN_RECORD).write_text(json.dumps({"step": 2, "options": options}))
    assert resume_problem(cfg, checkpoint) is None
    assert "(grpo.updates=1 there, 2 here)" in resume_problem(changed, checkpoint)
    assert "(top_digit='round' there, 'achieved' here)" in resume_problem(labels, checkpoint)


def test_a_resumed_run_records_the_checkpoints_it_continued(tmp_path):
    # the record of a resumed run gave its model= and pipeline= alone (model: small, where its
    # weights began at tiny), with no word of the resume; a resume of it is still no change
    from hydra import compose, initialize_config_dir

    from critic.train.run_record import RUN_RECORD, resume_problem, run_record
    from tests.configs.test_compose import CONFIGS

    first = tmp_path / "run" / "sft" / "checkpoint-2"
    first.mkdir(parents=True)
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        fresh = compose(config_name="train_critic")
        resumed = compose(config_name="train_critic", overrides=[f"resume={first}", "model=small"])
    assert "resumed_from" not in run_record(fresh)
    (first / RUN_RECORD).write_text(json.dumps({"step": 2, "options": run_record(fresh)}))
    options = run_record(resumed)
    assert options["resumed_from"] == [str(first.resolve())]
    second = tmp_path / "run2" / "sft" / "checkpoint-3"
    second.mkdir(parents=True)
    (second / RUN_RECORD).write_text(json.dumps({"step": 3, "options": options}))
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        again = compose(config_name="train_critic", overrides=[f"resume={second}"])
    assert run_record(again)["resumed_from"] == [str(second.resolve()), str(first.resolve())]
    assert resume_problem(again, second) is None
