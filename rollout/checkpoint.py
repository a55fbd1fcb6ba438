"""Loading a Qwen-VL checkpoint for the engines: which model types a critic can be, the
folder's processor settings, the device check, and ``load_checkpoint`` itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rollout.imports import require_package

# model_type → the transformers class that generates for it (looked up lazily by name).
MODEL_CLASSES = {
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
    "qwen3_vl_moe": "Qwen3VLMoeForConditionalGeneration",
}
# Models whose prompts hold each video as one timestamped segment per temporal patch (Qwen3-VL:
# critic.vision.VisionSpec.video_text), so a grid row of t temporal patches is t runs of video
# tokens; Qwen2.5-VL's is one run.
SEGMENTED_MODEL_TYPES = frozenset({"qwen3_vl", "qwen3_vl_moe"})
SUPPORTED = (
    "Qwen2.5-VL or Qwen3-VL checkpoints (model_type 'qwen2_5_vl', 'qwen3_vl' or 'qwen3_vl_moe')"
)


def video_times(model: Any, video_grid_thw: Any) -> dict[str, Any]:
    """``{"second_per_grid_ts": ones}`` for a Qwen2.5-VL model's videos, else ``{}``: extra
    inputs of a batch holding ``video_grid_thw``.

    Qwen2.5-VL spaces a video's temporal patches in its rope by these seconds per patch. Left
    out, transformers' ``get_rope_index`` (5.x) reads its default 1 from an iterator as long as
    the batch's sequence, not its videos, so a batch holding more videos than tokens per prompt
    (75 anchored 3-video prompts of 223 tokens) ended in a bare ``StopIteration``. Ones are that
    default: the positions are unchanged. ``model`` may be wrapped (a DeepSpeed engine)."""
    config = getattr(getattr(model, "module", model), "config", None)
    if video_grid_thw is None or getattr(config, "model_type", None) != "qwen2_5_vl":
        return {}
    import torch

    return {"second_per_grid_ts": torch.ones(len(video_grid_thw), device=video_grid_thw.device)}


class ModelLoadError(ValueError):
    """No Qwen-VL model loads from the given name or path."""


# Installed packages name the checkpoints they ship through this entry-point group: each entry is
# a mapping name → folder (``critic`` registers ``critic.weights.SHIPPED``, viscritic-small among
# them). rollout finds them through the installed metadata, so no rollout module names a package
# that builds on it (loading the entry imports that package, at run time, for a name only); a new
# shipped critic needs no change here or in pyproject.toml.
CHECKPOINT_GROUP = "viscritic.checkpoints"


def folder_problem(folder: str | Path) -> str | None:
    """What keeps a checkpoint folder from loading as a critic, read from its small files (no
    weights load, transformers is not imported), or None: ``config.json`` readable with a model
    type a critic can be, tokenizer files, and a chat template somewhere transformers reads one.
    A script checks its critic with this before hours of other work; :func:`load_checkpoint`
    checks the same and more as it loads."""
    folder = Path(folder)
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return f"{folder}/config.json is not a readable JSON file ({exc})"
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type is None:  # "is a None model" said nothing of the file
        return (
            f"{folder}/config.json names no model_type, so it is no model's config; VisCritic "
            f"critics are {SUPPORTED}: copy the checkpoint's own config.json"
        )
    if model_type not in MODEL_CLASSES:
        return f"{folder} is a {model_type!r} model; VisCritic critics are {SUPPORTED}"
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        return (
            f"{folder} has no tokenizer files ({', '.join(TOKENIZER_FILES)}); save the tokenizer "
            "beside the weights (tokenizer.save_pretrained) or export a training run's checkpoint "
            "with python -m critic.weights export"
        )
    if problem := _tokenizer_config_problem(folder):
        return problem
    try:
        tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        tokenizer_config = {}
    templates = [folder / "chat_template.jinja", folder / "chat_template.json"]
    if not any(p.is_file() for p in templates) and not (
        isinstance(tokenizer_config, dict) and tokenizer_config.get("chat_template")
    ):
        return (
            f"{folder} has no chat template (chat_template.jinja, or one in "
            "tokenizer_config.json): a critic builds its prompts with it; save the processor's "
            "or tokenizer's files beside the weights"
        )
    return None


# The tokens a critic's prompt puts around its frames, by the config key naming each one's id.
VISION_TOKENS = {
    "video_token_id": "<|video_pad|>",
    "vision_start_token_id": "<|vision_start|>",
    "vision_end_token_id": "<|vision_end|>",
}

# The files a tokenizer loads from (fast, byte-level BPE, SentencePiece): one of them must be there.
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model")


def _tokenizer_config_problem(folder: Path) -> str | None:
    """A folder with tokenizer files and no ``tokenizer_config.json``: transformers then builds
    the model type's default tokenizer class (Qwen2Tokenizer, which splits " 0" into two tokens
    and ends turns with <|endoftext|>), and the critic reads other tokens than it was trained on,
    without a word (the shipped critic's reading of one query went from 0.30 to 0.08)."""
    if (
        any((folder / n).is_file() for n in TOKENIZER_FILES)
        and not (folder / "tokenizer_config.json").is_file()
    ):
        return (
            f"{folder} has tokenizer files but no tokenizer_config.json, without which "
            "transformers builds another tokenizer than the one the critic was trained with "
            "(other tokens, another end of turn); copy it from where the checkpoint came from, "
            "save the tokenizer beside the weights (tokenizer.save_pretrained), or export a "
            "training run's checkpoint with python -m critic.weights export"
        )
    if (folder / "tokenizer_config.json").is_file():
        try:
            tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            return f"{folder}/tokenizer_config.json is not a readable JSON file ({exc})"
        if not isinstance(tokenizer_config, dict):
            return (
                f"{folder}/tokenizer_config.json holds a {type(tokenizer_config).__name__}, not "
                "a mapping of the tokenizer's settings; save the tokenizer beside the weights "
                "(tokenizer.save_pretrained)"
            )
    return None


def named_checkpoints() -> dict[str, Path]:
    """The checkpoints installed packages ship, by name (:data:`CHECKPOINT_GROUP`)."""
    from importlib.metadata import entry_points

    named: dict[str, Path] = {}
    for entry in entry_points(group=CHECKPOINT_GROUP):
        try:
            shipped = entry.load()
        except (ImportError, AttributeError) as exc:  # a broken install: say so, not a traceback
            raise ModelLoadError(
                f"the installed package that ships checkpoints as {entry.value!r} does not "
                f"import ({exc}); reinstall it (bash scripts/install.sh)"
            ) from None
        named.update({str(name): Path(folder) for name, folder in dict(shipped).items()})
    return named


def checkpoint_path(model: str | Path) -> str | Path:
    """A shipped checkpoint's folder for its name (``viscritic-small``), else ``model`` as given
    (a folder), so ``python -m rollout.serve --model viscritic-small`` serves the
    shipped critic as ``make_critic("viscritic-small")`` loads it. A folder that exists is never
    taken for a name (a warning says so where it has one)."""
    if not isinstance(model, str):
        return model
    named = named_checkpoints()
    if model not in named:
        return model
    if Path(model).is_dir():  # a folder is read as one (a file of that name is no checkpoint)
        name_shadowed(model, f"the shipped critic {model!r} ({named[model]})")
        return model
    return named[model]


def name_shadowed(path: str, what: str) -> None:
    """Warn that the folder ``path`` is read where ``what`` has that name too."""
    import warnings

    warnings.warn(
        f"{path!r} is a folder here and the name of {what}: the folder is read, as an existing "
        "folder always is; name the folder another way, or run from another folder, to read the "
        "other",
        stacklevel=3,
    )


# Where a checkpoint's processor settings live, in the order transformers' video processor reads
# them: processor_config.json's "video_processor", then the video and the image processor files.
PROCESSOR_FILES = (
    "processor_config.json",
    "video_preprocessor_config.json",
    "preprocessor_config.json",
)


def processor_config(checkpoint: str | Path) -> dict | None:
    """A checkpoint's video processor settings, read as transformers' video processor reads them
    (:data:`PROCESSOR_FILES`, first found wins), or ``None`` when it has no processor config.

    ``checkpoint`` is the folder the model loaded from (:func:`load_checkpoint` loads folders
    only); anything else (``""``: a model built in memory, as the presets are) has none.

    The critic reads its pixel budget from these settings (``critic.vision.VisionSpec``); the
    project's presets and the checkpoints it saves have none, and keep the project's budget.
    """
    folder = Path(checkpoint)
    if not str(checkpoint) or not folder.is_dir():
        return None
    for name in PROCESSOR_FILES:
        path = folder / name
        if not path.is_file():
            continue
        try:
            settings = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{path} is not a readable processor config: {exc}") from None
        if name == "processor_config.json" and isinstance(settings, dict):
            settings = settings.get("video_processor")
            if settings is None:  # a processor config without nested video settings: read on
                continue
        if not isinstance(settings, dict):
            raise ModelLoadError(
                f"{path} holds {type(settings).__name__} {settings!r:.60}, not a mapping of "
                "processor settings"
            )
        return settings
    return None


def load_checkpoint(path: str | Path, *, dtype: Any = None, device: str = "cpu"):
    """A Qwen2.5-VL or Qwen3-VL checkpoint (a local directory or a shipped name; a hub id is
    refused: nothing downloads at run time) and its tokenizer.

    Returns:
        ``(model, tokenizer)``: the model in eval mode on ``device``, the tokenizer left-padding.

    Raises:
        ModelLoadError: nothing loads from ``path``, it is another kind of model (refused
            before its weights load), its folder has no tokenizer or chat template (a critic
            needs both to build its prompts), or ``device`` or ``dtype`` is not one this machine
            has; or its processor config is not a readable mapping.
    """
    path = checkpoint_path(path)
    transformers = require_package("transformers", "vlm", f"loading the critic {path!s}")
    from safetensors import SafetensorError  # transformers' own dependency

    if (problem := device_problem(device)) is not None:
        raise ModelLoadError(problem)
    torch = require_package("torch", "vlm", f"loading the critic {path!s}")
    named = dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype)
    if not named and not isinstance(getattr(torch, str(dtype), None), torch.dtype):
        raise ModelLoadError(
            f"dtype={dtype!r} is not a torch dtype; use float32, bfloat16 or float16 (or "
            "leave it out for the checkpoint's own)"
        )
    try:
        if isinstance(path, str) and path.startswith("~"):
            path = str(Path(path).expanduser())  # transformers reads "~/ckpt" as a hub id
        if not Path(path).is_dir():
            # nothing downloads at run time (the scripts' early check refused a hub id, while
            # gym.make and the server tried the hub: 26 s offline, a download where online)
            hub = (
                ""
                if _looks_local(path)
                else (
                    f" (it reads as a hub id, and nothing downloads at run time: download it first, "
                    f"e.g. `huggingface-cli download {path} --local-dir /ckpt/{Path(str(path)).name}`, "
                    "and name that folder)"
                )
            )
            raise FileNotFoundError(f"no folder {path!s} on this machine{hub}")
        config = transformers.AutoConfig.from_pretrained(path)
        model_cls = getattr(transformers, MODEL_CLASSES.get(config.model_type, ""), None)
        if model_cls is None:
            raise ModelLoadError(
                f"{path!s} is a {config.model_type!r} model; VisCritic critics are {SUPPORTED}"
            )
        # the tokenizer first: a folder without one is refused before minutes of loading weights
        if Path(path).is_dir() and (problem := _tokenizer_config_problem(Path(path))):
            raise ModelLoadError(problem)
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, padding_side="left")
        _processor_template(path, tokenizer)
        _check_tokenizer(path, config, tokenizer)
        _fill_pad_token(path, tokenizer)
        model, loading = model_cls.from_pretrained(
            path, dtype=dtype or "auto", output_loading_info=True
        )
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        if isinstance(exc, (ModelLoadError, torch.OutOfMemoryError)):
            raise
        hint = ""
        if isinstance(exc, RuntimeError):  # transformers' refusal of weights of other shapes
            hint = (
                " (its config.json does not describe the weights beside it: copied from another "
                "model size? keep each checkpoint's files together)"
            )
        if isinstance(exc, SafetensorError):  # a truncated file, or a Git LFS pointer
            hint = " (its weights file is damaged or not the real file: copy it again, or `git lfs pull`)"
        names = sorted(named_checkpoints())
        if Path(path).is_dir() and not (Path(path) / "config.json").is_file():
            hint = " (it is a folder but not a checkpoint: no config.json in it)"
        raise ModelLoadError(
            f"cannot load critic model {path!s}: {str(exc).rstrip('.')}{hint}. Pass a local "
            "Qwen2.5-VL or Qwen3-VL checkpoint directory, or a shipped critic's name ("
            + (
                ", ".join(names)
                if names
                else "none is installed: bash scripts/install.sh installs "
                "the package with viscritic-small"
            )
            + ")"
        ) from exc
    if missing := sorted(loading.get("missing_keys") or ()):
        # transformers fills them with random values and prints a table: a partly random critic
        raise ModelLoadError(
            f"{path!s}'s weights lack {len(missing)} of the model's tensors (e.g. "
            f"{', '.join(missing[:3])}): its weights file is another model's, was saved without "
            "some modules, or with a prefix on every name (module.); save the whole model "
            "with save_pretrained, or export a training run's checkpoint with python -m "
            "critic.weights export"
        )
    return model.to(device).eval(), tokenizer


def _looks_local(path: str | Path) -> bool:
    """Whether ``path`` can only be a folder, not a hub id (``namespace/name``): absolute, or
    starting ``.`` or ``~``, or of one part or more than two. A hub model without a namespace
    (``gpt2``) is none a critic can be; looking ``tiny`` up on the hub took 26 s offline."""
    text = str(path)
    return (
        Path(text).is_absolute()
        or text.startswith((".", "~"))
        or len(Path(text).parts) != 2
        or "\\" in text
    )


def _check_tokenizer(path: str | Path, config: Any, tokenizer: Any) -> None:
    """A :class:`ModelLoadError` when ``tokenizer`` cannot build a critic's prompts."""
    video_token = getattr(config, "video_token_id", None)
    if video_token is not None and len(tokenizer) <= video_token:
        # transformers builds an empty tokenizer from a folder without tokenizer files
        raise ModelLoadError(
            f"{path!s} has no tokenizer files (the tokenizer loaded from it knows "
            f"{len(tokenizer)} tokens; the model's video token is id {video_token}); save the "
            "tokenizer beside the weights (tokenizer.save_pretrained) or export a training run's "
            "checkpoint with python -m critic.weights export"
        )
    vocab = getattr(config.get_text_config(), "vocab_size", None)
    if vocab is not None and len(tokenizer) > vocab:
        raise ModelLoadError(
            f"{path!s} has a tokenizer of {len(tokenizer)} tokens for a model of {vocab}: "
            "the tokenizer files are another model's; copy the ones saved with these weights"
        )
    for name in ("video_token_id", "vision_start_token_id", "vision_end_token_id"):
        want = getattr(config, name, None)
        token = VISION_TOKENS[name]
        got = tokenizer.convert_tokens_to_ids(token)
        if want is not None and got != want:
            raise ModelLoadError(
                f"{path!s}: its tokenizer reads {token} as id {got}, its config.json's "
                f"{name} is {want}; the tokenizer files are another model's: copy the ones "
                "saved with these weights"
            )
    if not getattr(tokenizer, "chat_template", None):
        raise ModelLoadError(
            f"{path!s} has no chat template (chat_template.jinja, or one in "
            "tokenizer_config.json): a critic builds its prompts with it; save the processor's "
            "or tokenizer's files beside the weights"
        )


def _processor_template(path: str | Path, tokenizer: Any) -> None:
    """Give a tokenizer without a chat template the one of its folder's ``chat_template.json``
    (the processor's file, which the tokenizer does not read: a folder saved by a processor
    alone holds its template there)."""
    file = Path(path) / "chat_template.json"
    if getattr(tokenizer, "chat_template", None) or not file.is_file():
        return
    try:
        template = json.loads(file.read_text()).get("chat_template")
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return  # _check_tokenizer says the folder has no chat template
    if isinstance(template, str) and template.strip():
        tokenizer.chat_template = template


def _fill_pad_token(path: str | Path, tokenizer: Any) -> None:
    """Give a tokenizer without a pad token Qwen's own (``<|endoftext|>``), else its end token:
    batches are padded (left for generation, right for training) and every padded position is
    masked, so which id fills them does not matter, but None did (a ``TypeError`` in the
    engine, a 500 from the server, a traceback in training). No end token either is a
    :class:`ModelLoadError`: completions could not end."""
    if tokenizer.eos_token_id is None:
        raise ModelLoadError(
            f"{path!s}: its tokenizer has no end-of-sequence token (eos_token), so a critic's "
            "answers could not end; set eos_token in its tokenizer_config.json (Qwen's Instruct "
            "releases use <|im_end|>)"
        )
    if tokenizer.pad_token_id is None:
        known = "<|endoftext|>" in tokenizer.get_vocab()
        tokenizer.pad_token = "<|endoftext|>" if known else tokenizer.eos_token


def device_problem(device: Any) -> str | None:
    """Why a critic cannot run on ``device`` here (a message naming it and the fix), or ``None``.

    ``cpu``, ``cuda`` and ``cuda:<index>`` are devices; CUDA ones only where this torch build sees
    that GPU. The callers raise their own error with it: ``train_critic.py``'s config check
    (``TrainConfigError``), ``VLMCritic`` (``CriticError``), :func:`load_checkpoint` and
    ``critic.models.load_model`` (``ModelLoadError``), so a bad device fails before a model
    loads, not in ``model.to``.

    Example:
        >>> device_problem("cpu") is None
        True
        >>> device_problem("gpu")
        "device='gpu' is not a device; use cpu, cuda or cuda:<index>"
    """
    name = str(device)
    kind, colon, index = name.partition(":")
    if name == "cpu":
        return None
    if kind != "cuda" or (colon and not (index.isascii() and index.isdigit())):
        return f"device={name!r} is not a device; use cpu, cuda or cuda:<index>"
    torch = require_package("torch", "vlm", f"device={name}")
    if not torch.cuda.is_available():
        return (
            f"device={name!r}, but this torch ({torch.__version__}) sees no CUDA GPU; use "
            "device=cpu, or install a CUDA build of torch on a machine with a GPU"
        )
    count = torch.cuda.device_count()
    if index and int(index) >= count:
        return (
            f"device={name!r}, but this machine has {count} CUDA GPU(s); use cuda:0 to "
            f"cuda:{count - 1}, or device=cpu"
        )
    return None
