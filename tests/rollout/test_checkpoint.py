"""Loading a critic checkpoint (rollout/checkpoint.py) when its files are incomplete or do not
belong together: no tokenizer, weights missing tensors, another model's config or tokenizer, a
tokenizer without a pad token. Split from test_serve_failures.py."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rollout.checkpoint import ModelLoadError, load_checkpoint


def test_a_checkpoint_without_its_tokenizer_is_a_load_error(tiny_model, tmp_path):
    model, tokenizer = tiny_model
    model.save_pretrained(tmp_path)  # the weights alone
    with pytest.raises(ModelLoadError, match=f"^{tmp_path} has no tokenizer files"):
        load_checkpoint(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match=f"^{tmp_path} has no chat template"):
        load_checkpoint(tmp_path)
    # a folder a processor saved keeps its template in chat_template.json, which the tokenizer
    # does not read: it was refused here, after zero_shot_rl's check of the folder had passed it
    from critic.factory import model_source_problem

    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": tokenizer.chat_template}))  # fmt: skip
    assert model_source_problem(str(tmp_path)) is None
    assert load_checkpoint(tmp_path)[1].chat_template == tokenizer.chat_template
    (tmp_path / "chat_template.json").unlink()
    with pytest.raises(ModelLoadError, match=r"^dtype='bogus' is not a torch dtype"):
        load_checkpoint(tmp_path, dtype="bogus")
    # tokenizer files without tokenizer_config.json: transformers built Qwen2Tokenizer (" 0" as
    # two tokens, <|endoftext|> ending turns), and the shipped critic's copy read 0.08 for 0.30
    tokenizer.save_pretrained(tmp_path)
    (tmp_path / "tokenizer_config.json").unlink()
    said = f"{tmp_path} has tokenizer files but no tokenizer_config.json, without which"
    assert model_source_problem(str(tmp_path)).startswith(said)
    with pytest.raises(ModelLoadError, match=f"^{said}"):
        load_checkpoint(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("[]")  # an AttributeError from transformers
    said = f"{tmp_path}/tokenizer_config.json holds a list, not a mapping"
    assert model_source_problem(str(tmp_path)).startswith(said)
    with pytest.raises(ModelLoadError, match=f"^{said}"):
        load_checkpoint(tmp_path)


def test_a_checkpoint_whose_files_do_not_belong_together_is_a_load_error(
    tiny_model, tmp_path, monkeypatch
):
    # each loaded, or failed only at the first query, or loaded with random weights in place
    # of those the folder lacked (transformers prints a table and goes on)
    from safetensors.torch import load_file, save_file

    from critic.models import build_tokenizer, save_model

    model, tokenizer = tiny_model
    save_model(model, tokenizer, tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("visual.")},
              tmp_path / "model.safetensors", metadata={"format": "pt"})  # fmt: skip
    dropped = sum(k.startswith("visual.") for k in weights)
    with pytest.raises(ModelLoadError, match=rf"^{tmp_path}'s weights lack {dropped} of the "):
        load_checkpoint(tmp_path)
    save_file({f"module.{k}": v for k, v in weights.items()}, tmp_path / "model.safetensors",
              metadata={"format": "pt"})  # fmt: skip
    with pytest.raises(ModelLoadError, match=r"weights lack \d+ of the model.s tensors"):
        load_checkpoint(tmp_path)
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((tmp_path / "config.json").read_text())
    wider = json.loads(json.dumps(config))
    wider["text_config"]["hidden_size"] *= 2  # another model size's config (a RuntimeError)
    (tmp_path / "config.json").write_text(json.dumps(wider))
    with pytest.raises(ModelLoadError, match=r"does not describe the weights beside it"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(config))
    # another model's tokenizer: an IndexError in the embedding at the first query
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).unlink()
    other = build_tokenizer(len(tokenizer))
    other.add_tokens([f"<extra_{i}>" for i in range(10)])  # one beyond the embedding: IndexError
    other.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match=rf"has a tokenizer of {len(other)} tokens for a "):
        load_checkpoint(tmp_path)
    # one of the same size whose special tokens sit at other ids: frames read as text
    import critic.models

    monkeypatch.setattr(critic.models, "SPECIAL_TOKENS", critic.models.SPECIAL_TOKENS[::-1])
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).unlink()
    shuffled = build_tokenizer(len(tokenizer))
    assert len(shuffled) <= model.config.get_text_config().vocab_size
    shuffled.save_pretrained(tmp_path)
    video = model.config.video_token_id
    with pytest.raises(ModelLoadError, match=rf"reads <\|video_pad\|> as id \d+, its config.json's "
                       rf"video_token_id is {video}; the tokenizer files are another model's"):  # fmt: skip
        load_checkpoint(tmp_path)


def test_a_tokenizer_without_a_pad_token_gets_qwens_own(tiny_model, tmp_path):
    # a fine-tuned release that left pad_token out: a TypeError in the engine's padding, a 500
    # from the server, a traceback in training
    from critic import ProgressQuery, make_critic
    from critic.models import save_model

    model, tokenizer = tiny_model
    save_model(model, tokenizer, tmp_path)
    path = tmp_path / "tokenizer_config.json"
    config = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in config.items() if k != "pad_token"}))
    _, loaded = load_checkpoint(tmp_path)
    assert loaded.pad_token == "<|endoftext|>" and loaded.pad_token_id == tokenizer.pad_token_id
    frames = np.zeros((2, 56, 56, 3), dtype=np.uint8)
    estimates = make_critic(str(tmp_path)).estimate_progress(
        [ProgressQuery("reach", frames=frames)] * 2
    )
    assert all(e.status.value == "ok" for e in estimates)
    path.write_text(
        json.dumps({k: v for k, v in config.items() if k not in ("pad_token", "eos_token")})
    )
    with pytest.raises(ModelLoadError, match=f"^{tmp_path}: its tokenizer has no end-of-sequence"):
        load_checkpoint(tmp_path)
