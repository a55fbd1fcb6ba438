"""Training checkpoints written whole or not at all (critic/train/checkpoint.py): a save cut short
keeps the earlier one, and a full disk is an OSError naming the folder, its half-save removed."""

from __future__ import annotations

import pytest


def test_a_save_cut_short_leaves_the_earlier_checkpoint_whole(tmp_path, tiny_model, monkeypatch):
    import copy

    import torch

    from critic.models import load_model
    from critic.train.checkpoint import STATE, latest_checkpoint, save_checkpoint

    model, tokenizer = tiny_model
    optimizer = torch.optim.AdamW(model.parameters())
    path = tmp_path / "sft" / "checkpoint-2"
    save_checkpoint(path, model, tokenizer, optimizer, 2)
    first = {k: v.clone() for k, v in load_model(path)[0].state_dict().items()}
    trained = copy.deepcopy(model)
    with torch.no_grad():
        next(trained.parameters()).add_(1.0)

    def cut_short(*args, **kwargs):  # Ctrl-C, or a full disk, as the state is written
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", cut_short)
    with pytest.raises(KeyboardInterrupt):  # a resumed run's save of the same folder
        save_checkpoint(path, trained, tokenizer, optimizer, 2)
    monkeypatch.undo()
    # before: the new weights lay beside the old trainer_state.pt, a complete-looking mix
    again = load_model(path)[0].state_dict()
    assert all(torch.equal(again[k], v) for k, v in first.items())
    assert latest_checkpoint(tmp_path / "sft") == path
    save_checkpoint(path, trained, tokenizer, optimizer, 2)  # the next save replaces it whole
    again = load_model(path)[0].state_dict()
    assert not all(torch.equal(again[k], v) for k, v in first.items())
    assert (path / STATE).is_file()
    assert sorted(p.name for p in (tmp_path / "sft").iterdir()) == ["checkpoint-2"]


@pytest.mark.parametrize(
    "failure",
    ["safetensors", "torch"],
)
def test_a_full_disk_is_an_oserror_and_leaves_no_half_save(tmp_path, tiny_model, monkeypatch,
                                                           failure):  # fmt: skip
    # safetensors' SafetensorError and torch.save's RuntimeError went past every caller's
    # `except OSError`: a traceback, and the half-written staging folder kept the disk full
    import safetensors
    import torch

    from critic.train.checkpoint import save_checkpoint, staging_folder

    model, tokenizer = tiny_model
    optimizer = torch.optim.AdamW(model.parameters())
    path = tmp_path / "sft" / "checkpoint-2"
    if failure == "safetensors":
        says = "Error while serializing: I/O error: No space left on device (os error 28)"

        def full(*args, **kwargs):
            raise safetensors.SafetensorError(says)

        monkeypatch.setattr(type(model), "save_pretrained", full)
    else:
        says = "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"

        def full(*args, **kwargs):
            raise RuntimeError(says)

        monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError) as err:
        save_checkpoint(path, model, tokenizer, optimizer, 2)
    assert str(err.value) == (
        f"{says}: writing into {staging_folder(path)} failed; is the disk full?"
    )
    assert not staging_folder(path).exists() and not path.exists()
    # any other error is not taken for a full disk
    monkeypatch.undo()

    def bug(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(torch, "save", bug)
    with pytest.raises(RuntimeError, match=r"^bug$") as err:
        save_checkpoint(path, model, tokenizer, optimizer, 2)
    assert err.value.__cause__ is None  # not its own cause
    assert not staging_folder(path).exists()


def test_a_process_s_state_restores_its_generators_and_a_damaged_one_is_a_checkpoint_error(
    tmp_path,
):
    import numpy as np
    import torch

    from critic.train.checkpoint import CheckpointError, load_rank_state, save_rank_state

    path = save_rank_state(tmp_path, 1, {"step": 3})
    after = (torch.rand(2), np.random.rand())
    torch.rand(5), np.random.rand()  # the run went on
    state = load_rank_state(tmp_path, 1)
    assert state["step"] == 3
    assert torch.equal(torch.rand(2), after[0]) and np.random.rand() == after[1]
    with pytest.raises(CheckpointError, match=r"has no rank0\.pt: the checkpoint was written"):
        load_rank_state(tmp_path, 0)
    # a save cut short (DeepSpeed's resume): a raw RuntimeError from torch.load
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=rf"^{path} cannot be read \(.*\); the save was cut"):
        load_rank_state(tmp_path, 1)
    torch.save({"step": 3}, path)  # no generators in it
    with pytest.raises(CheckpointError, match=rf"^{path} is not a trainer state this project"):
        load_rank_state(tmp_path, 1)
