"""Presets build offline, the tokenizer round-trips, and checkpoints reload exactly."""

from __future__ import annotations

import pytest
import torch

from critic.models import PRESETS, ModelLoadError, build_tokenizer, load_model, save_model

pytest.importorskip("transformers")


def test_tokenizer_round_trips_and_has_the_special_tokens():
    tokenizer = build_tokenizer()
    text = "<|im_start|>user\nThe gripper is 4 cm above the cube; progress 35%.<|im_end|>"
    assert tokenizer.decode(tokenizer(text).input_ids) == text
    for token in ("<|video_pad|>", "<answer>", "</think>"):
        assert len(tokenizer(token, add_special_tokens=False).input_ids) == 1
    for digit in "0123456789":  # the score readout needs single-token digits
        assert len(tokenizer(digit, add_special_tokens=False).input_ids) == 1
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True)  # fmt: skip
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_presets_sizes():
    model, _ = load_model("tiny")
    params = sum(p.numel() for p in model.parameters())
    assert 1e5 < params < 2e6
    assert set(PRESETS) == {"tiny", "small", "tiny-qwen3vl", "small-qwen3vl"}
    qwen3, _ = load_model("tiny-qwen3vl")  # the same sizes in Qwen3-VL's architecture
    assert qwen3.config.model_type == "qwen3_vl"
    assert 1e5 < sum(p.numel() for p in qwen3.parameters()) < 2e6


def test_save_and_load_round_trip(tmp_path, tiny_model):
    model, tokenizer = tiny_model
    save_model(model, tokenizer, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "model.safetensors").exists()
    loaded, loaded_tokenizer = load_model(tmp_path / "ckpt")
    ids = torch.tensor([tokenizer("progress <answer>35</answer>").input_ids])
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    assert loaded_tokenizer.get_vocab() == tokenizer.get_vocab()


def test_unloadable_model_names_the_fix(tmp_path):
    with pytest.raises(ModelLoadError) as err:
        load_model(tmp_path / "nothing-here")
    # the cause was transformers' reading of a hub id ("Repo id must be in the form ...")
    assert str(err.value).startswith(
        f"cannot load critic model {tmp_path / 'nothing-here'}: no folder "
        f"{tmp_path / 'nothing-here'} on this machine. Pass a local"
    )
    assert str(err.value).endswith(
        "Pass a local Qwen2.5-VL or Qwen3-VL checkpoint directory, or a shipped critic's name "
        "(viscritic-small), or a preset (['small', 'small-qwen3vl', 'tiny', 'tiny-qwen3vl'])"
    )
    for local in ("./nothing-here", "runs/r1/sft/final"):  # relative, or more than an org/name
        with pytest.raises(ModelLoadError) as err:
            load_model(local)
        assert str(err.value).startswith(f"cannot load critic model {local}: no folder {local} ")
    # a hub id: nothing downloads at run time (it was looked up on the hub, 26 s offline, and
    # would have downloaded where the machine has a network; the scripts' check refused it)
    with pytest.raises(ModelLoadError) as err:
        load_model("Qwen/Qwen2.5-VL-7B-Instruct")
    assert str(err.value).startswith(
        "cannot load critic model Qwen/Qwen2.5-VL-7B-Instruct: no folder Qwen/Qwen2.5-VL-7B-Instruct "
        "on this machine (it reads as a hub id, and nothing downloads at run time: download it "
        "first, e.g. `huggingface-cli download Qwen/Qwen2.5-VL-7B-Instruct --local-dir "
        "/ckpt/Qwen2.5-VL-7B-Instruct`, and name that folder). Pass a local"
    )
    # a folder that exists but holds no checkpoint said the shipped critics were not installed
    (tmp_path / "data").mkdir()
    with pytest.raises(ModelLoadError) as err:
        load_model(tmp_path / "data")
    assert "(it is a folder but not a checkpoint: no config.json in it). Pass a local" in str(
        err.value
    )
    assert "a shipped critic's name (viscritic-small)" in str(err.value)


def _qwen3_vl_moe(tokenizer):
    """A tiny Qwen3-VL-MoE (4 experts, 2 a token) in the presets' tokenizer."""
    import transformers

    from critic.models import SPECIAL_TOKENS

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    config = transformers.Qwen3VLMoeConfig(
        text_config={"vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128,
                     "moe_intermediate_size": 32, "num_experts": 4, "num_experts_per_tok": 2,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                     "head_dim": 16, "rope_parameters": {"rope_type": "default", "rope_theta": 1e4,
                     "mrope_section": [2, 3, 3], "mrope_interleaved": True}},
        vision_config={"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
                       "out_hidden_size": 64, "num_position_embeddings": 64,
                       "deepstack_visual_indexes": [0]},
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.Qwen3VLMoeForConditionalGeneration(config).eval()


@pytest.mark.parametrize("kind", ["qwen3_vl", "qwen3_vl_moe"])
def test_a_qwen3_vl_checkpoint_is_a_critic(tmp_path, kind):
    """A Qwen3-VL (dense or MoE) folder loads as a critic and reads progress as the model does."""
    import numpy as np

    from critic import ProgressQuery, make_critic
    from critic.models import build_preset

    model, tokenizer = build_preset("tiny-qwen3vl")
    if kind == "qwen3_vl_moe":
        model = _qwen3_vl_moe(tokenizer)
    save_model(model, tokenizer, tmp_path)
    critic = make_critic({"name": str(tmp_path), "mode": "score"})
    assert critic._model.config.model_type == kind
    assert critic.vision.segmented and critic.vision.patch_size == 16
    frames = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    queries = [ProgressQuery("lift", frames=frames[:n]) for n in (1, 3, 5)]
    estimates = critic.estimate_progress(queries)
    # by hand: each query alone through the model as saved, no cache, no shared prefix
    plain = make_critic({"name": str(tmp_path), "mode": "score", "cache": False})
    plain.engine.share_prefix = False
    alone = [plain.estimate_progress([q])[0].progress for q in queries]
    np.testing.assert_allclose([e.progress for e in estimates], alone, atol=1e-6)
    assert len({round(p, 6) for p in alone}) == 3  # the clips read differently: a real check


def test_another_kind_of_model_is_refused_before_its_weights_load(tmp_path):
    import transformers

    # a Qwen2-VL folder with its config and tokenizer but no weights: loading them would fail on
    # the missing model.safetensors, so the refusal below proves it comes first
    build_tokenizer().save_pretrained(tmp_path)
    transformers.Qwen2VLConfig().save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError) as err:
        load_model(tmp_path)
    assert str(err.value) == (
        f"{tmp_path} is a 'qwen2_vl' model; VisCritic critics are Qwen2.5-VL or Qwen3-VL "
        "checkpoints (model_type 'qwen2_5_vl', 'qwen3_vl' or 'qwen3_vl_moe')"
    )


def test_a_device_this_machine_lacks_is_a_load_error_not_an_assertion(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on a CPU-only build
    with pytest.raises(ModelLoadError) as err:
        load_model("tiny", device="cuda")
    assert str(err.value) == (
        f"device='cuda', but this torch ({torch.__version__}) sees no CUDA GPU; use device=cpu, "
        "or install a CUDA build of torch on a machine with a GPU"
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # one GPU, and cuda:3 asked
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ModelLoadError) as err:
        load_model("tiny", device="cuda:3")
    assert str(err.value) == (
        "device='cuda:3', but this machine has 1 CUDA GPU(s); use cuda:0 to cuda:0, or device=cpu"
    )
    for name in ("gpu", "cuda:x", "cpu:0"):
        with pytest.raises(ModelLoadError) as err:
            load_model("tiny", device=name)
        assert str(err.value) == f"device={name!r} is not a device; use cpu, cuda or cuda:<index>"


def test_a_damaged_weights_file_is_a_load_error_that_says_so(tmp_path):
    model, tokenizer = load_model("tiny")
    save_model(model, tokenizer, tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a copy cut short
    with pytest.raises(ModelLoadError) as err:
        load_model(tmp_path / "ckpt")
    assert "its weights file is damaged or not the real file" in str(err.value)


def test_model_type_reads_without_loading_and_says_none_for_what_it_cannot_read(tmp_path):
    from critic.models import build_preset, model_type

    assert (
        model_type("tiny-qwen3vl") == "qwen3_vl" and model_type("viscritic-small") == "qwen2_5_vl"
    )
    save_model(*build_preset("tiny-qwen3vl"), tmp_path)
    assert model_type(tmp_path) == "qwen3_vl"
    assert model_type(5) is None and model_type(tmp_path / "missing") is None  # not a name: no type


def test_an_unreadable_processor_config_is_a_load_error(tmp_path):
    from critic import make_critic
    from critic.models import build_preset

    save_model(*build_preset("tiny-qwen3vl"), tmp_path)
    (tmp_path / "video_preprocessor_config.json").write_text("[1, 2]")
    with pytest.raises(
        ModelLoadError, match=r"video_preprocessor_config.json holds list \[1, 2\], not a"
    ):
        make_critic(str(tmp_path))
    (tmp_path / "video_preprocessor_config.json").write_text("{oops")
    with pytest.raises(ModelLoadError, match=r"video_preprocessor_config.json is not a readable"):
        make_critic(str(tmp_path))


def test_building_a_preset_leaves_the_callers_random_numbers_alone():
    # torch.manual_seed(s), gym.make(..., critic="tiny"), then the agent: every seed s built the
    # same agent, since the preset reseeded torch with its own seed
    import torch

    from critic.models import build_preset

    torch.manual_seed(1)
    expected = torch.rand(3)
    torch.manual_seed(1)
    first, _ = build_preset("tiny")
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(2)
    again, _ = build_preset("tiny")  # the preset's own weights, whatever the caller's seed
    assert all(
        torch.equal(a, b) for a, b in zip(first.parameters(), again.parameters(), strict=True)
    )


def test_a_qwen_release_saved_without_its_processor_config_is_warned_of(tiny_model):
    from transformers import Qwen2_5_VLConfig, Qwen3VLConfig

    from critic.models import CLIP_FRAMES_KEY, unrecorded_pixel_budget

    # Qwen's own vocabulary, no record of this project's training: fine-tuned elsewhere and saved
    # with save_pretrained alone, it read frames at the project's budget without a word
    for config in (Qwen2_5_VLConfig(), Qwen3VLConfig()):
        said = unrecorded_pixel_budget(config, "/ckpt/mine")
        assert said.startswith("/ckpt/mine has no processor config (video_preprocessor_config.json")
    # this project's checkpoints record their training; the presets' vocabulary is small
    ours = Qwen2_5_VLConfig(**{CLIP_FRAMES_KEY: 8})
    assert unrecorded_pixel_budget(ours, "x") is None
    assert unrecorded_pixel_budget(tiny_model[0].config, "tiny") is None
    # a served checkpoint's config, as GET /v1/model gives it: read alike
    said = unrecorded_pixel_budget(Qwen3VLConfig().to_dict(), "the checkpoint served at u")
    assert said.startswith("the checkpoint served at u has no processor config")
    assert unrecorded_pixel_budget(ours.to_dict(), "x") is None
    assert unrecorded_pixel_budget(tiny_model[0].config.to_dict(), "tiny") is None
