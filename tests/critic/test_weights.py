"""The shipped critic loads by name everywhere, and export copies a checkpoint without its optimizer."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pytest

from critic import ProgressQuery, make_critic
from critic.factory import available_critics
from critic.weights import MODEL_FILES, SHIPPED, export, shipped_path
from tests.zygote import run_python


def test_viscritic_small_is_shipped_and_reads_progress():
    folder = shipped_path("viscritic-small")
    assert folder == SHIPPED["viscritic-small"]
    assert (folder / "model.safetensors").stat().st_size < 20 * 2**20  # a few MB, in the repo
    assert (folder / "MODEL_CARD.md").is_file()
    assert "viscritic-small" in available_critics()
    critic = make_critic("viscritic-small")
    # Reacher's reward reads the first and the current image (a 1-frame clip); the others 8 frames
    assert critic.clip_frames == 8
    assert [critic.clip_frames_for(t) for t in ("Reacher-v5", "Pusher-v5", "Lift")] == [1, 8, 8]
    frames = np.zeros((4, 64, 64, 3), dtype=np.uint8)
    estimate = critic.estimate_progress([ProgressQuery("Touch the target.", frames=frames)])[0]
    assert 0.0 <= estimate.progress <= 1.0 and estimate.spread is not None
    assert shipped_path("tiny") is None and shipped_path(None) is None


@pytest.mark.parametrize("task", ["Reacher-v5", "Pusher-v5"])
def test_the_shipped_critic_reads_a_scripted_expert_rising(task):
    from critic.base import active_length, query_frames
    from critic.eval import value_order_correlation
    from critic.queries import predict_progress, progress_queries
    from envs.plans import plan_episodes
    from envs.synth import record_episode

    episode = record_episode(plan_episodes(task, 1, failure_fraction=0.0, first_seed=7)[0])
    critic = make_critic("viscritic-small")
    queries = progress_queries(episode, frames_per_query=query_frames(critic, None, task))
    predicted = predict_progress(critic, queries)
    active = active_length(episode.progress)  # up to the first frame the task is achieved
    assert predicted[active - 1] - predicted[0] > 0.5
    assert value_order_correlation(predicted[:active]) > 0.8


def test_export_copies_the_model_not_the_optimizer(tmp_path, tiny_model):
    from critic.models import save_model

    checkpoint = save_model(*tiny_model, tmp_path / "ckpt")
    (checkpoint / "trainer_state.pt").write_bytes(b"optimizer")
    (checkpoint / "trainer_config.json").write_text('{"step": 3, "options": {}}')
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "MODEL_CARD.md").write_text("card")
    export(checkpoint, tmp_path / "out")
    copied = {p.name for p in (tmp_path / "out").iterdir()}
    assert "trainer_state.pt" not in copied and "MODEL_CARD.md" in copied
    # the run record goes along (the shipped weights' did not: their options could not be checked)
    assert {"model.safetensors", "config.json", "trainer_config.json"} <= copied
    assert copied <= {*MODEL_FILES, "MODEL_CARD.md", "trainer_config.json"}
    # a later export without a run record takes the earlier one's away: never two runs' files
    (checkpoint / "trainer_config.json").unlink()
    export(checkpoint, tmp_path / "out", overwrite=True)
    assert not (tmp_path / "out" / "trainer_config.json").exists()
    assert make_critic(str(tmp_path / "out")).name.startswith("vlm:")
    with pytest.raises(FileNotFoundError, match="has no"):
        export(tmp_path / "nothing", tmp_path / "out2")
    done = run_python([sys.executable, "-m", "critic.weights", "export", str(tmp_path / "nothing"),
                           str(tmp_path / "o")], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 1 and done.stderr.startswith("critic.weights: ")
    done = run_python([sys.executable, "-m", "critic.weights"], capture_output=True, text=True)
    assert done.returncode == 2 and "usage" in done.stderr


def test_an_export_that_cannot_write_is_a_message_and_changes_nothing(tmp_path, tiny_model,
                                                                    monkeypatch, capsys):  # fmt: skip
    # a full disk mid-copy was a raw OSError traceback
    import shutil

    from critic.models import save_model
    from critic.weights import main

    checkpoint = save_model(*tiny_model, tmp_path / "ckpt")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "MODEL_CARD.md").write_text("card")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copy2", full_disk)
    assert main(["export", str(checkpoint), str(tmp_path / "out")]) == 1
    said = capsys.readouterr().err.strip()
    assert said.endswith(
        f"critic.weights: cannot write {tmp_path / 'out'} (No space left on device); the "
        "destination is unchanged"
    )
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["MODEL_CARD.md"]


def test_export_refuses_a_file_or_the_checkpoint_itself(tmp_path, tiny_model):
    from critic.models import save_model
    from critic.weights import ExportError

    checkpoint = save_model(*tiny_model, tmp_path / "ckpt")
    before = {p.name: p.read_bytes() for p in checkpoint.iterdir()}
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    cases = (
        (afile, f"destination {afile} is a file; pass a folder (it is made if missing), e.g. "
                "critic/weights/<name>"),
        (afile / "sub", f"destination {afile / 'sub'} lies under the file {afile}; pass a folder"),
        (checkpoint, f"destination {checkpoint} is the checkpoint itself; pass another folder to "
                     "copy its model files into, e.g. critic/weights/<name>"),
        (tmp_path / "ckpt" / ".." / "ckpt", "is the checkpoint itself; pass another folder"),
    )  # fmt: skip
    for destination, message in cases:
        with pytest.raises(ExportError) as excinfo:
            export(checkpoint, destination)
        assert message in str(excinfo.value)
    done = run_python([sys.executable, "-m", "critic.weights", "export", str(checkpoint),
                           str(afile)], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip() == f"critic.weights: {cases[0][1]}"
    done = run_python([sys.executable, "-m", "critic.weights", "export", str(checkpoint),
                           str(checkpoint)], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 1 and done.stderr.strip() == f"critic.weights: {cases[2][1]}"
    assert afile.read_text() == "keep me"  # nothing copied over the file, or into the checkpoint
    assert {p.name: p.read_bytes() for p in checkpoint.iterdir()} == before


def test_export_replaces_weights_only_when_told_and_never_mixes_two(tmp_path, tiny_model):
    from critic.models import save_model
    from critic.weights import ExportError

    checkpoint = save_model(*tiny_model, tmp_path / "ckpt")
    out = tmp_path / "out"
    export(checkpoint, out)
    (out / "MODEL_CARD.md").write_text("card")
    with pytest.raises(
        ExportError, match=r"already holds a critic's files \(model.safetensors, config.json"
    ):
        export(checkpoint, out)
    # a checkpoint without the optional generation config: the earlier one's is removed
    lean = tmp_path / "lean"
    shutil.copytree(checkpoint, lean)
    (lean / "generation_config.json").unlink()
    export(lean, out, overwrite=True)
    assert not (out / "generation_config.json").exists() and (out / "MODEL_CARD.md").exists()
    assert not (out / ".export-partial").exists()
    done = run_python([sys.executable, "-m", "critic.weights", "export", str(checkpoint),
                           str(out), "--overwrite"], capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0 and (out / "generation_config.json").exists()
    # an incomplete or damaged checkpoint is refused, naming what is wrong
    (lean / "chat_template.jinja").unlink()
    with pytest.raises(FileNotFoundError, match=r"has no \['chat_template.jinja'\]"):
        export(lean, tmp_path / "out3")
    cut = tmp_path / "cut"
    shutil.copytree(checkpoint, cut)
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors is damaged"):
        export(cut, tmp_path / "out4")
    assert not (tmp_path / "out4").exists()


def test_export_takes_a_sharded_checkpoint_with_qwen_s_own_files(tmp_path, tiny_model):
    import json

    from critic.models import save_model
    from rollout.checkpoint import processor_config

    model, tokenizer = tiny_model
    checkpoint = tmp_path / "sharded"
    # a 7B's save_pretrained writes shards and an index; Qwen's releases carry chat_template.json
    # and a processor config: the export refused the first two, and dropped the third, so the
    # exported critic read frames at another pixel budget than its checkpoint
    model.save_pretrained(checkpoint, max_shard_size="200KB")
    tokenizer.save_pretrained(checkpoint)
    shards = sorted(p.name for p in checkpoint.glob("model-*.safetensors"))
    assert len(shards) > 1 and (checkpoint / "model.safetensors.index.json").is_file()
    template = (checkpoint / "chat_template.jinja").read_text()
    (checkpoint / "chat_template.jinja").unlink()
    (checkpoint / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    budget = {"min_pixels": 3136, "max_pixels": 12544}
    (checkpoint / "preprocessor_config.json").write_text(json.dumps(budget))
    out = export(checkpoint, tmp_path / "out")
    copied = {p.name for p in out.iterdir()}
    assert {*shards, "model.safetensors.index.json", "chat_template.json",
            "preprocessor_config.json"} <= copied  # fmt: skip
    assert processor_config(out) == budget
    frames = np.zeros((2, 64, 64, 3), dtype=np.uint8)  # the copy loads, shards and all, and reads
    (estimate,) = make_critic(str(out)).estimate_progress([ProgressQuery("x", frames=frames)])
    assert 0.0 <= estimate.progress <= 1.0
    # a single-file export over it leaves no shard of the earlier one beside its weights
    export(save_model(model, tokenizer, tmp_path / "single"), out, overwrite=True)
    assert not any(out.glob("model-*.safetensors")) and (out / "model.safetensors").is_file()
    assert not (out / "preprocessor_config.json").exists()
    # a shard its index names, missing: refused, named
    (checkpoint / shards[-1]).unlink()
    with pytest.raises(FileNotFoundError, match=rf"has no \['{shards[-1]}'\]"):
        export(checkpoint, tmp_path / "out2")
