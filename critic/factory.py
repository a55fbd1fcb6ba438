"""Build a critic from a name, a config mapping, or pass an instance through.

Each backend is imported inside its own branch (LeRobot's factory pattern), so asking for the oracle
never imports transformers.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from critic.base import Critic, unknown_options


class UnknownCriticError(ValueError):
    """The critic name is not one this factory can build."""


class UnknownCriticOptionError(UnknownCriticError):
    """A critic was given an option its constructor does not take."""


def _build(cls: type[Critic], name: str, kwargs: dict[str, Any]) -> Critic:
    """``cls(**kwargs)``, an option it does not take refused by name with the ones it does."""
    import inspect

    params = inspect.signature(cls).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = None if takes_any else unknown_options(kwargs, params)
    if unknown:
        raise UnknownCriticOptionError(
            f"{unknown}: not an option of the {name!r} critic; its options are {list(params)}"
        )
    return cls(**kwargs)


def _expanded(value: Any) -> Any:
    """A ``~/...`` path with the user's home put in, as :func:`rollout.checkpoint.load_checkpoint`
    reads it; anything else as it is."""
    return os.path.expanduser(value) if isinstance(value, str) and value.startswith("~") else value


def _path_like(value: str) -> bool:
    """Whether a name that is no critic reads as a path (a server URL's slashes do not)."""
    return Path(value).is_file() or (
        ("/" in value or value.startswith((".", "~"))) and "://" not in value
    )


def _not_a_folder(value: str) -> str:
    """What is wrong with a name that reads as a path but is no folder here."""
    path = Path(value)
    if path.is_file():
        return f"{value} is a file; name the checkpoint folder that holds it ({path.parent})"
    org = value.split("/", 1)[0]
    # Org/Model, whose Org is no folder here (outputs/final is a run folder mistyped)
    if (
        re.fullmatch(r"[\w.-]+/[\w.-]+", value)
        and not org.startswith(".")
        and not Path(org).is_dir()
    ):
        return (
            f"{value!r} is no folder here; it reads as a Hugging Face Hub id, and nothing "
            "downloads at run time: download the checkpoint on a machine with internet "
            f"(huggingface-cli download {value} --local-dir <folder>) and name that folder"
        )
    return f"there is no folder {value} on this machine; name a checkpoint folder that exists"


def available_critics() -> list[str]:
    """Names :func:`make_critic` accepts (besides a checkpoint directory path)."""
    from critic.models import PRESETS
    from critic.weights import SHIPPED

    return ["oracle", "noisy_oracle", "vlm", "ensemble", *sorted(SHIPPED), *sorted(PRESETS)]


def model_source_problem(model: Any) -> str | None:
    """What is wrong with a VLM critic's ``model`` before anything loads, or None: it must be a
    shipped critic, a preset, an existing checkpoint folder, or a critic server URL whose address
    parses (nothing downloads at run time). No weights load, no connection is made.

    Example:
        >>> model_source_problem("http://127.0.0.1:8000") is None
        True
    """
    from critic.models import PRESETS
    from critic.vlm import is_server_url
    from critic.weights import SHIPPED

    if not isinstance(model, str | os.PathLike):
        return f"model={model!r} must be a name, a checkpoint folder or a server URL"
    model = _expanded(str(model))
    if is_server_url(model):
        from rollout.remote import RemoteEngine

        try:
            RemoteEngine(model)  # parses the address as the critic's client will; connects later
        except ValueError as exc:
            return str(exc)
        return None
    from rollout.checkpoint import folder_problem
    from rollout.imports import MissingExtraError, require_package

    try:  # every critic but a server's runs its model here
        require_package("transformers", "vlm", f"the critic model={model!r}")
    except MissingExtraError as exc:
        return str(exc)
    if Path(model).is_dir() and not (Path(model) / "config.json").is_file():
        return (
            f"model={model!r} is a folder but not a checkpoint (it holds no config.json); name "
            "the folder that holds the model's config.json and weights (a training run's is "
            "<run>/<stage>/final), or a shipped critic "
            f"({sorted(SHIPPED)})"
        )
    if Path(model).is_dir():  # its model type, tokenizer, chat template, processor and weights
        return (
            folder_problem(model)
            or _processor_problem(Path(model))
            or _weights_files_problem(Path(model))
        )
    if model in PRESETS or model in SHIPPED:
        return None
    if _path_like(model):
        return f"model={model!r}: {_not_a_folder(model)}"
    return (
        f"model={model!r} is neither a shipped critic ({sorted(SHIPPED)}), a preset "
        f"({sorted(PRESETS)}), an existing checkpoint folder nor a critic server URL "
        "(http://host:port); nothing downloads at run time: put the checkpoint on disk and name "
        "its folder"
    )


def critic_spec_problem(spec: Any) -> str | None:
    """What :func:`make_critic` would refuse in ``spec``, found without loading weights or
    connecting, or None: an unknown name, an option the critic does not take, a VLM critic's
    options and model (:meth:`critic.vlm.VLMCritic.check_options`, :func:`model_source_problem`),
    an ensemble's members alike; the oracles, which load nothing, are built. A script checks
    every critic this way before the first one runs for hours (``eval_critic.py``).

    Example:
        >>> critic_spec_problem({"name": "oracle", "bogus": 1})
        "bogus=1: not an option of the 'oracle' critic; its options are ['needs_frames']"
    """
    import dataclasses
    import inspect

    from critic.base import CriticError

    if isinstance(spec, Critic):
        return None
    from omegaconf import OmegaConf

    if OmegaConf.is_config(spec):  # an ensemble's members as a ListConfig were not checked
        spec = OmegaConf.to_container(spec, resolve=True)
    kwargs = dict(spec) if isinstance(spec, Mapping) else {}
    name = kwargs.pop("name", None) if isinstance(spec, Mapping) else spec
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    name = _expanded(name)
    if "model" in kwargs:
        kwargs["model"] = _expanded(kwargs["model"])
    if name in ("oracle", "noisy_oracle"):
        try:
            make_critic({"name": name, **kwargs}).close()
        except (UnknownCriticError, CriticError, ValueError, TypeError) as exc:
            return str(exc)
        return None
    if name == "ensemble":
        from critic.ensemble import EnsembleCritic

        params = inspect.signature(EnsembleCritic).parameters
        if unknown := unknown_options(kwargs, params):
            return (
                f"{unknown}: not an option of the 'ensemble' critic; its options are {list(params)}"
            )
        from critic.ensemble import EnsembleConfigError

        options = {k: v for k, v in kwargs.items() if k in ("members", "combine", "std_weight")}
        try:  # its rule, weight and number of members (combine=max, one member)
            members = EnsembleCritic.check_options(**options)
        except EnsembleConfigError as exc:
            return str(exc)
        for member in members:
            if problem := critic_spec_problem(member):
                return f"ensemble member {member!r}: {problem}"
        return None
    from critic.models import PRESETS
    from critic.vlm import VLMCritic, is_server_url
    from critic.weights import SHIPPED

    if not isinstance(name, str) or not name.strip() or not (
        name == "vlm" or name in PRESETS or name in SHIPPED or is_server_url(name)
        or Path(name).is_dir()
    ):  # fmt: skip
        try:
            make_critic(spec)  # its own message: names no critic, unknown name, not a folder
        except UnknownCriticError as exc:
            return str(exc)
        raise AssertionError(f"make_critic built {spec!r}, a name this check does not know")
    try:
        kwargs = _vlm_options(name, kwargs)
    except UnknownCriticOptionError as exc:
        return str(exc)
    try:
        VLMCritic.check_options(**kwargs)
    except CriticError as exc:
        return str(exc)
    # {name: vlm} alone builds VLMCritic's own default model
    default = next(f.default for f in dataclasses.fields(VLMCritic) if f.name == "model")
    return model_source_problem(kwargs.get("model", default))


def _vlm_options(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """A VLM critic's options: a name other than ``vlm`` is its model, and a ``model=`` beside it
    that names another is refused (``{name: viscritic-small, model: tiny}`` built tiny)."""
    if name == "vlm":
        return kwargs
    if "model" in kwargs and str(kwargs["model"]) != name:
        raise UnknownCriticOptionError(
            f"critic {name!r} with model={kwargs['model']!r}: the name is the model; give "
            f"{{name: vlm, model: {kwargs['model']}}} for that model, or drop model="
        )
    return {**kwargs, "model": name}


def _weights_files_problem(folder: Path) -> str | None:
    """A checkpoint folder without weights, or with a safetensors file whose header does not
    read (a copy cut short, a Git LFS pointer), or None; the headers alone are read."""
    from critic.weights import _weights_problem

    files = sorted(folder.glob("*.safetensors"))
    if not files and not any(folder.glob("*.bin")):
        return (
            f"{folder} holds no weights (model.safetensors, or its shards); copy them beside "
            "its config.json"
        )
    for file in files:
        if problem := _weights_problem(file):
            return (
                f"{file} is damaged or not the real file ({problem}): copy it again, or "
                "`git lfs pull`"
            )
    for index in folder.glob("*.safetensors.index.json"):  # a sharded checkpoint's map
        try:
            shards = set(json.loads(index.read_text())["weight_map"].values())
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError):
            return f"{index} is not a readable shard index (no weight_map); copy it again"
        if missing := sorted(s for s in shards if not (folder / str(s)).is_file()):
            return (
                f"{folder} lacks {len(missing)} of the {len(shards)} weight shards its "
                f"{index.name} names ({', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''}); "
                "the copy was cut short: copy them beside its config.json"
            )
    return None


def _processor_problem(folder: Path) -> str | None:
    """A checkpoint's video processor config that frames cannot be read with, found as the
    critic would find it when it loads (:func:`critic.vlm._vision`), or None."""
    from critic.vision import ProcessorConfigError, VisionSpec
    from rollout.checkpoint import ModelLoadError, processor_config

    try:
        config = json.loads((folder / "config.json").read_text())  # read by folder_problem
        VisionSpec.from_config(config.get("vision_config") or {}, processor_config(folder))
    except ModelLoadError as exc:
        return str(exc)
    except ProcessorConfigError as exc:
        return (
            f"{folder}'s video processor config cannot be read: {exc}; fix it in the checkpoint's "
            "video_preprocessor_config.json (or processor_config.json / preprocessor_config.json)"
        )
    return None


def make_critic(spec: str | Mapping[str, Any] | Critic) -> Critic:
    """Return a critic for ``spec``.

    Args:
        spec: a :class:`Critic` (returned as is); ``"oracle"``; a shipped critic
            (``"viscritic-small"``), a VLM preset of random weights (``"tiny"``, ``"small"``), a checkpoint directory or a critic server URL (``http://host:port``),
            all giving a ``VLMCritic``; or a mapping
            ``{"name": <one of those, or "vlm">, **kwargs}`` whose kwargs go to the critic's
            constructor (``{"name": "vlm", "model": path, "mode": "reason"}``), or
            ``{"name": "ensemble", "members": [...], "combine": "min"}``
            (:class:`critic.ensemble.EnsembleCritic`).

    Raises:
        UnknownCriticError: the name is not known; the message lists the known names.
        UnknownCriticOptionError: an option the critic does not take; the message lists those
            it takes.

    Example:
        >>> make_critic({"name": "oracle", "needs_frames": True}).needs_frames
        True
    """
    if isinstance(spec, Critic):
        return spec
    if isinstance(spec, Mapping):
        kwargs = dict(spec)
        name = kwargs.pop("name", None)
    else:
        name, kwargs = spec, {}
    name = _expanded(name)
    if "model" in kwargs:
        kwargs["model"] = _expanded(kwargs["model"])
    if isinstance(name, os.PathLike):  # a folder, as VLMCritic(model=Path(...)) takes it
        name = os.fspath(name)
        if not isinstance(name, str) or not Path(name).is_dir():
            raise UnknownCriticError(
                f"critic {spec!r} is a path but not a folder here; give a checkpoint folder "
                f"that exists, or a name (known critics: {available_critics()})"
            )
        from critic.vlm import VLMCritic

        return _build(VLMCritic, name, {**kwargs, "model": name})
    if isinstance(name, str) and not name.strip():  # "" was the working directory, as a path
        raise UnknownCriticError(
            f"critic {spec!r} names no critic; known critics: {available_critics()}, or a "
            "checkpoint folder or server URL"
        )
    if not isinstance(name, str):
        # a mapping of a critic's fields, no name: what env.spec.to_json() wrote for a critic
        # given to gym.make as an instance (gymnasium's dataclasses.asdict opens it up)
        recorded = (
            "; a spec serialised with a critic instance records its fields, not the critic: "
            "give gym.make the critic by name or mapping where the spec must serialise"
            if isinstance(spec, Mapping) and "name" not in spec
            else ""
        )
        raise UnknownCriticError(
            f"critic {spec!r} names no critic; pass a name or path as a string (known critics: "
            f"{available_critics()}), a mapping {{'name': ..., **kwargs}}, or a critic.Critic"
            f"{recorded}"
        )
    if name == "oracle":
        from critic.oracle import OracleCritic

        return _build(OracleCritic, name, kwargs)
    if name == "noisy_oracle":
        from critic.oracle import NoisyOracleCritic

        return _build(NoisyOracleCritic, name, kwargs)
    if name == "ensemble":
        from critic.ensemble import EnsembleCritic

        return _build(EnsembleCritic, name, kwargs)
    from critic.models import PRESETS
    from critic.vlm import is_server_url
    from critic.weights import SHIPPED

    if (
        name == "vlm"
        or name in PRESETS
        or name in SHIPPED
        or is_server_url(name)
        or (isinstance(name, str) and Path(name).is_dir())
    ):
        from critic.vlm import VLMCritic

        return _build(VLMCritic, name, _vlm_options(name, kwargs))
    if isinstance(name, str) and _path_like(name):
        raise UnknownCriticError(f"critic {name!r}: {_not_a_folder(name)}")
    raise UnknownCriticError(
        f"unknown critic {name!r}; known critics: {available_critics()}. Pass one of these names, "
        "a checkpoint directory, a critic server URL (http://host:port), a mapping {'name': ..., **kwargs}, or a critic.Critic instance."
    )
