"""Qwen-VL critics: load a checkpoint, or build a named preset offline.

Presets (``tiny`` for tests, ``small`` for the CPU-trainable critic; ``tiny-qwen3vl`` and
``small-qwen3vl`` the same sizes in Qwen3-VL's architecture) are models built from configs with
random weights and a tokenizer trained here, offline, with ``tokenizers``: byte-level BPE, the
ChatML template and Qwen's special tokens. Nothing is downloaded. A preset saved with
``save_pretrained`` loads back through the same :func:`load_model` as a real checkpoint.

Seen with transformers 5.23 (DESIGN.md): ``PreTrainedTokenizerFast(tokenizer_object=...)`` with a
chat template round-trips; ``Qwen2Tokenizer(vocab_file=..., merges_file=...)`` silently yields an
empty vocabulary, so it is not used.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollout.checkpoint import ModelLoadError, device_problem
from rollout.imports import require_package

__all__ = [
    "CLIP_FRAMES_KEY",
    "FAILURE_TYPES_KEY",
    "PRESETS",
    "TASK_CLIP_FRAMES_KEY",
    "TRAINED_TASKS_KEY",
    "ModelLoadError",
    "build_preset",
    "build_tokenizer",
    "device_problem",
    "load_model",
    "load_served_tokenizer",
    "model_type",
    "save_model",
    "unrecorded_pixel_budget",
]

# The key of a checkpoint's config.json that records the frames per progress query it was trained
# on (critic/train/recipe.py writes it; a model from elsewhere lacks it: any clip length).
CLIP_FRAMES_KEY = "viscritic_clip_frames"
# Beside it, the tasks trained at another clip length: {task name: frames} (train_critic.py's
# task_frames=). A checkpoint can read Reacher's reward from 1 frame and Lift from 8.
TASK_CLIP_FRAMES_KEY = "viscritic_task_clip_frames"
# The failure types its failure-detection prompts offered: the built-in vocabulary and the types
# of its data beyond it (a task of one's own, docs/tasks.md); a critic offers the same.
FAILURE_TYPES_KEY = "viscritic_failure_types"
# The tasks whose episodes it was trained on (and its starting checkpoint's): on another, the
# reward wrapper and the evaluator warn that its readings may mean little.
TRAINED_TASKS_KEY = "viscritic_tasks"
# The view each trained task's episodes were recorded at, as their folders' manifest.json gives
# it: {task: {"image_size": [height, width], "camera": [...]}}. An env rendering the task at
# another size or from another camera is warned of: a critic's reading does not carry over.
TASK_VIEWS_KEY = "viscritic_task_views"


def task_views(recorded: Any) -> dict[str, dict[str, Any]]:
    """A checkpoint's :data:`TASK_VIEWS_KEY` record, the entries that are views (a hand-edited
    config's others are left out: no view to hold an env to)."""
    if not isinstance(recorded, dict):
        return {}
    return {
        str(task): dict(view)
        for task, view in recorded.items()
        if isinstance(view, dict) and {"image_size", "camera"} <= set(view)
    }


# Qwen2.5-VL's and Qwen3-VL's released vocabularies (151,936 and 151,936 rows); the presets' is
# a few hundred tokens.
QWEN_VOCABULARY = 150_000


def unrecorded_pixel_budget(config: Any, source: str) -> str | None:
    """A warning for a checkpoint that reads as Qwen's own (its vocabulary), not this project's
    (no ``viscritic_*`` key), saved without a processor config: a model fine-tuned elsewhere and
    saved with ``save_pretrained`` alone, which then reads frames at the project's small pixel
    budget rather than its release's; or None. ``config``: the model's config, or a served one's
    as a mapping (``GET /v1/model``)."""

    def field(holder: Any, key: str) -> Any:
        return holder.get(key) if isinstance(holder, Mapping) else getattr(holder, key, None)

    text = field(config, "text_config") or config
    vocabulary = field(text, "vocab_size") or field(config, "vocab_size") or 0
    keys = config if isinstance(config, Mapping) else vars(config)
    ours = any(str(key).startswith("viscritic_") for key in keys)
    if vocabulary < QWEN_VOCABULARY or ours:
        return None
    return (
        f"{source} has no processor config (video_preprocessor_config.json, "
        "preprocessor_config.json or processor_config.json), so its frames are read at this "
        "project's small pixel budget, not at its release's; copy the release's processor config "
        "beside its config.json if it was trained at that budget"
    )


SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
# The answer tags are single tokens, so even a tiny critic emits them reliably.
TAG_TOKENS = ("<think>", "</think>", "<answer>", "</answer>", "<transform>", "</transform>")

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Text the offline BPE is trained on: the words critics read and write. Digits and percent signs
# matter most (progress answers); bytes cover everything else (byte-level BPE never fails to encode).
_CORPUS = [
    "Estimate the task progress from 0 to 100 percent. The robot should: pick up the red cube.",
    "You see the first frame, the video so far and the current frame of a robot episode.",
    "Did the robot succeed or fail? If it failed, name the failure type.",
    "Which transform was applied to the video: none, rotate 90, rotate 180, rotate 270, "
    "horizontal flip, temporal reverse, shuffle, speed change?",
    "The gripper is 4 cm above the cube; the cube is not yet grasped; progress 35%.",
    "The fingertip is far from the target. The arm moves toward the target. The door is open.",
    "success failure missed grasp drop after lift object pushed away stall overshoot wrong target",
    " ".join(str(i) for i in range(101)) + " 0.0 0.25 0.5 0.75 1.0 % percent",
    "reach grasp lift carry place push open turn handle stack cube can bin table arm gripper",
]


@dataclass(frozen=True)
class Preset:
    """Sizes of a preset model, and its architecture (``qwen2_5_vl`` or ``qwen3_vl``)."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vision_depth: int
    vision_hidden_size: int
    vision_intermediate_size: int
    vision_heads: int
    vocab_size: int = 1024
    family: str = "qwen2_5_vl"


PRESETS: dict[str, Preset] = {
    # 0.20 M parameters: for tests.
    "tiny": Preset(64, 128, 2, 4, 2, 2, 32, 64, 2),
    # 2.48 M parameters: the shipped viscritic-small's size, trainable on a 2-core CPU.
    "small": Preset(192, 512, 4, 6, 2, 4, 96, 256, 4, vocab_size=2048),
    # the same sizes in Qwen3-VL's architecture (16-px patches, deepstack, timestamped video):
    # 0.23 M and 2.64 M parameters
    "tiny-qwen3vl": Preset(64, 128, 2, 4, 2, 2, 32, 64, 2, family="qwen3_vl"),
    "small-qwen3vl": Preset(192, 512, 4, 6, 2, 4, 96, 256, 4, vocab_size=2048, family="qwen3_vl"),
}


def build_tokenizer(vocab_size: int = 1024):
    """Train the offline byte-level BPE tokenizer with Qwen's special tokens and ChatML."""
    tokenizers = require_package("tokenizers", "vlm", "building a critic tokenizer")
    transformers = require_package("transformers", "vlm", "building a critic tokenizer")
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token=None))
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS + TAG_TOKENS),
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        chat_template=CHATML_TEMPLATE,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
    )


def build_preset(name: str, seed: int = 0):
    """A randomly initialised preset model and its tokenizer: ``(model, tokenizer)``."""
    torch = require_package("torch", "vlm", f"the {name!r} critic preset")
    transformers = require_package("transformers", "vlm", f"the {name!r} critic preset")
    if name not in PRESETS:
        raise ModelLoadError(f"unknown preset {name!r}; presets: {sorted(PRESETS)}")
    size = PRESETS[name]
    tokenizer = build_tokenizer(size.vocab_size)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    head_dim = size.hidden_size // size.num_attention_heads
    # mrope splits half the head dim into (temporal, height, width) sections: Qwen uses 1/4, 3/8, 3/8.
    half = head_dim // 2
    mrope = [half // 4, (half - half // 4) // 2, half - half // 4 - (half - half // 4) // 2]
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": size.hidden_size,
        "intermediate_size": size.intermediate_size,
        "num_hidden_layers": size.num_hidden_layers,
        "num_attention_heads": size.num_attention_heads,
        "num_key_value_heads": size.num_key_value_heads,
        "max_position_embeddings": 4096,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
        "tie_word_embeddings": True,
        # Qwen's defaults (151643, ...) are outside this vocabulary: transformers warns on load.
        "bos_token_id": None,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision = {
        "depth": size.vision_depth,
        "hidden_size": size.vision_hidden_size,
        "intermediate_size": size.vision_intermediate_size,
        "num_heads": size.vision_heads,
        "out_hidden_size": size.hidden_size,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    }
    if size.family == "qwen3_vl":
        # Qwen3-VL: 16-px patches, a learned position grid (interpolated: 8² covers any frame),
        # deepstack features from the first tower block, interleaved mrope
        config_cls = transformers.Qwen3VLConfig
        model_cls = transformers.Qwen3VLForConditionalGeneration
        extra = {}
        text.update(head_dim=head_dim)
        text["rope_parameters"]["mrope_interleaved"] = True
        vision.update(patch_size=16, num_position_embeddings=64, deepstack_visual_indexes=[0])
    else:
        config_cls = transformers.Qwen2_5_VLConfig
        model_cls = transformers.Qwen2_5_VLForConditionalGeneration
        vision.update(patch_size=14, window_size=112, fullatt_block_indexes=[size.vision_depth - 1])
        tokens = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
        extra = {**tokens, "bos_token_id": None}  # Qwen2.5-VL's top-level config keeps them too
    config = config_cls(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
        **extra,
    )
    # the preset's weights from its own seed, the caller's generator left as it was: a script
    # that seeds torch, makes the env (critic="tiny") and then its agent got one agent for
    # every seed
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return model.eval(), tokenizer


def load_model(name_or_path: str | Path, *, dtype: Any = None, device: str = "cpu", seed: int = 0):
    """A preset name, or a Qwen2.5-VL or Qwen3-VL checkpoint folder (see
    :func:`rollout.checkpoint.load_checkpoint`).

    Returns:
        ``(model, tokenizer)``, the model in eval mode on ``device``.

    Raises:
        ModelLoadError: not a preset, and no checkpoint loads from it; or ``device`` is not one
            this machine has (:func:`device_problem`).
    """
    if (problem := device_problem(device)) is not None:
        raise ModelLoadError(problem)
    if is_preset(name_or_path):
        model, tokenizer = build_preset(str(name_or_path), seed=seed)
        return model.to(device), tokenizer
    from rollout.checkpoint import checkpoint_path, load_checkpoint

    name_or_path = checkpoint_path(name_or_path)  # a shipped critic's folder, by its name

    try:
        return load_checkpoint(name_or_path, dtype=dtype, device=device)
    except ModelLoadError as exc:
        if str(exc).startswith("cannot load"):
            raise ModelLoadError(f"{exc}, or a preset ({sorted(PRESETS)})") from exc.__cause__
        raise


def is_preset(name: Any, warn: bool = True) -> bool:
    """Whether ``name`` names a preset (:data:`PRESETS`) and no folder of that name is here: an
    existing folder is read as the folder, as :func:`rollout.checkpoint.checkpoint_path` reads a
    shipped critic's name (``warn``: say so where a preset has that name)."""
    if not isinstance(name, str | os.PathLike) or str(name) not in PRESETS:
        return False
    if Path(name).is_dir():  # a file of that name is no checkpoint: the preset
        if warn:
            from rollout.checkpoint import name_shadowed

            name_shadowed(str(name), f"the preset {str(name)!r}")
        return False
    return True


def model_type(name_or_path: str | Path) -> str | None:
    """The ``model_type`` a preset, shipped critic or checkpoint folder loads as, read from its
    config.json without loading weights; ``None`` where there is none to read (a hub id, a
    server URL, a missing folder)."""
    import json

    from critic.weights import shipped_path

    if not isinstance(name_or_path, str | os.PathLike):
        return None
    if is_preset(name_or_path, warn=False):
        return PRESETS[str(name_or_path)].family
    if not Path(name_or_path).is_dir():
        name_or_path = shipped_path(name_or_path) or name_or_path
    config = Path(name_or_path) / "config.json"
    try:
        return json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def load_served_tokenizer(files: dict[str, str]):
    """A tokenizer from the files a critic server hands out (name → base64 content)."""
    import base64
    import tempfile

    transformers = require_package("transformers", "vlm", "talking to a critic server")
    with tempfile.TemporaryDirectory() as tmp:
        for name, content in files.items():
            (Path(tmp) / Path(name).name).write_bytes(base64.b64decode(content))
        return transformers.AutoTokenizer.from_pretrained(tmp, padding_side="left")


def save_model(model, tokenizer, path: str | Path) -> Path:
    """Save model (safetensors) and tokenizer so :func:`load_model` reads them back."""
    path = Path(path)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
