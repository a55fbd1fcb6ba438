"""What an evaluation is asked to do, checked before any critic loads: the config's splits,
counts, external videos and by-state bins, and each critic's spec (its options and model, with
no weights loaded), and the column name each critic gets.

Split from ``eval_critic.py`` (which loads the episodes, runs the critics and writes the
results) along the line between checking a run and running it, as ``rl_setup.py`` is from
``zero_shot_rl.py``. ``eval_critic.py`` re-exports what it imports from here.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from rollout.checks import folder_problem, is_int, is_number, list_option

SPLITS = ("train", "val", "test", "all")
MAX_EXTERNAL_SIZE = 1024  # pixels a side: the critics read 56-448


class EvalConfigError(ValueError):
    """The evaluation config cannot run (found before any critic loads)."""


def check_config(cfg: DictConfig) -> None:
    """Fail before any critic loads when the config cannot run."""
    from critic.data.episodes import finished_ids, repeated_episodes
    from critic.detection import check_failure_frames

    data = list_option(cfg.data)
    if not list_option(cfg.critics):
        raise EvalConfigError("critics is empty; give at least one, e.g. critics=[oracle]")
    labels = [critic_label(spec)[0] for spec in list_option(cfg.critics)]
    if twice := sorted({label for label in labels if labels.count(label) > 1}):
        raise EvalConfigError(
            f"critics {twice} would share a column (and the second's results replace the "
            "first's); label each, e.g. critics=[{name: <path>, label: run_a},{name: <path>, "
            "label: run_b}]"
        )
    for spec in list_option(cfg.critics):  # every name, before the first critic loads
        check_critic_spec(spec)
    if cfg.split not in SPLITS:
        raise EvalConfigError(f"split={cfg.split!r} is not a split; pick one of {list(SPLITS)}")
    if cfg.calibration_split is not None and cfg.calibration_split not in SPLITS:
        raise EvalConfigError(
            f"calibration_split={cfg.calibration_split!r} is not a split; pick one of "
            f"{list(SPLITS)}, or null to fit no failure threshold"
        )
    calibration_split = cfg.calibration_split
    if calibration_split is not None and (
        calibration_split == cfg.split or "all" in (calibration_split, cfg.split)
    ):
        raise EvalConfigError(
            f"calibration_split={calibration_split!r} overlaps split={cfg.split!r}: τ would be "
            "fit on the episodes it scores; give a split apart from the evaluated one (e.g. "
            "split=test calibration_split=val), or calibration_split=null to fit no τ"
        )
    if not is_int(cfg.seed) or cfg.seed < 0:
        raise EvalConfigError(
            f"seed={cfg.seed!r} must be an integer >= 0 (it seeds the probes' shuffles), e.g. seed=0"
        )
    for key in ("episodes_per_task", "stride", "failure_frames", "batch"):
        value = cfg[key]
        if not is_int(value) or value < 1:
            raise EvalConfigError(f"{key}={value!r} must be an integer >= 1")
    try:
        check_failure_frames(cfg.failure_frames)
    except ValueError as exc:
        raise EvalConfigError(str(exc)) from None
    frames = cfg.frames_per_query
    if frames is not None and (not is_int(frames) or frames < 1):
        raise EvalConfigError(
            f"frames_per_query={frames!r} must be an integer >= 1, or null for each critic's own "
            "clip length"
        )
    if not is_int(cfg.delay_points) or cfg.delay_points < 0:
        raise EvalConfigError(f"delay_points={cfg.delay_points!r} must be an integer >= 0")
    if not isinstance(cfg.probes, bool):  # probes=off or probes=no ran every probe
        raise EvalConfigError(f"probes={cfg.probes!r} must be true or false")
    probes = cfg.probe_episodes
    if cfg.probes and (not is_int(probes) or probes < 1):
        # 0 would run every probe on no episode and report each as failed: probes=false is "none"
        raise EvalConfigError(
            f"probe_episodes={probes!r} must be an integer >= 1 (expert episodes per task the "
            "probes transform); to run no probes, set probes=false"
        )
    external = cfg.external
    if external is not None and not isinstance(external, str):
        given = OmegaConf.to_container(external) if OmegaConf.is_config(external) else external
        raise EvalConfigError(
            f"external={given!r} must be one folder of labelled videos, e.g. "
            "external=/data/robofail, or null for none"
        )
    size = cfg.external_size
    if size is not None and (not is_int(size) or not 1 <= size <= MAX_EXTERNAL_SIZE):
        # 100000 asked PyAV for 30 GB frames, and the error blamed the video
        raise EvalConfigError(
            f"external_size={size!r} must be an integer in [1, {MAX_EXTERNAL_SIZE}] (the square "
            "size, in pixels, the external videos' frames are resized to), e.g. "
            "external_size=128, or null to keep their own size"
        )
    if external is not None and not external.strip():
        raise EvalConfigError(
            "external='' names no folder (it would read the working directory); give the "
            "folder of labelled videos, e.g. external=/data/robofail, or external=null for none"
        )
    if problem := folder_problem("data", data):
        raise EvalConfigError(problem)
    missing = [d for d in data if not finished_ids(d)]  # no episodes/ folder, or an empty one
    if missing:
        raise EvalConfigError(
            f"data: no episodes in {missing}; make them with "
            "`python experiments/synthesize.py env=<task> out=<folder>`"
            + ("" if external is None else ", or give data=[] to score the external videos alone")
        )
    if twice := repeated_episodes("data", data):  # each is scored once per folder
        logging.getLogger(__name__).warning("%s", twice)
    if external is not None and not Path(external).is_dir():
        raise EvalConfigError(f"external={external!r} is not a folder of labelled videos")
    if not data and external is None:
        raise EvalConfigError("nothing to evaluate: data is empty and external is not set")
    by_state = cfg.get("by_state")
    if by_state is not None and not isinstance(by_state, DictConfig):
        given = OmegaConf.to_container(by_state) if OmegaConf.is_config(by_state) else by_state
        raise EvalConfigError(
            f"by_state={given!r} must map each task to {{key: <privileged state name>, bins: "
            "[increasing numbers]}, e.g. by_state={Reacher-v5: {key: fingertip_to_target_cm, "
            "bins: [1, 2, 4]}}, or be null for no reading by state"
        )
    for task, spec in (by_state or {}).items():
        edges = spec.get("bins") if isinstance(spec, DictConfig) else None
        if (
            not isinstance(spec, DictConfig)
            or not isinstance(spec.get("key"), str)
            or not isinstance(edges, ListConfig)
            or not edges
            or not all(is_number(e) for e in edges)
            or any(b <= a for a, b in itertools.pairwise(edges))
        ):
            raise EvalConfigError(
                f"by_state.{task}={OmegaConf.to_container(spec) if isinstance(spec, DictConfig) else spec!r}"
                " must be {key: <privileged state name>, bins: [increasing numbers]}, e.g. "
                "{key: fingertip_to_target_cm, bins: [1, 2, 3, 4, 6, 10]}"
            )


def check_critic_spec(spec: Any) -> None:
    """Refuse, before any critic loads, a critic :func:`critic.factory.make_critic` could not
    build: by the factory's rules, a name is a known critic, an existing checkpoint
    folder or a critic server URL; an ensemble's members are checked alike; and the options and
    model each critic would refuse (:func:`critic.factory.critic_spec_problem`). No weights load.

    Raises:
        EvalConfigError: the spec names no critic, a name that is none of those (named), a
            server URL that is no address, a folder that is no checkpoint, or an option the
            critic does not take or cannot run with.
    """
    from critic.factory import available_critics, critic_spec_problem
    from critic.vlm import is_server_url
    from rollout.remote import RemoteEngine

    if OmegaConf.is_config(spec):
        spec = OmegaConf.to_container(spec, resolve=True)
    name = spec.get("name") if isinstance(spec, dict) else spec
    if not isinstance(name, str):
        raise EvalConfigError(
            f"critics: {spec!r} names no critic; give a name or path, or a mapping "
            "{name: <name or path>, label: <column>, **options}"
        )
    url = spec.get("model") if name == "vlm" and isinstance(spec, dict) else name
    if is_server_url(url):
        try:
            RemoteEngine(url)  # parses the address as the critic's client will; connects later
        except ValueError as exc:
            raise EvalConfigError(f"critics: {exc}") from exc
    elif name not in available_critics() and not Path(name).expanduser().is_dir():
        # the factory's message, as every script gives it: an unknown name with the known ones,
        # a path that is no folder, a hub id with the download that fixes it
        raise EvalConfigError(f"critics: {critic_spec_problem(name)}")
    if name == "ensemble" and isinstance(spec, dict):
        members = spec.get("members")
        if isinstance(members, list):  # anything else: the ensemble's own message, as it loads
            for member in members:
                check_critic_spec(member)
    # its options and its model as the critic would check them, without loading it: a
    # folder that is no checkpoint failed only after every critic before it had run
    if problem := critic_spec_problem(critic_label(spec)[1]):
        raise EvalConfigError(f"critics: {problem}")


def critic_label(spec: Any) -> tuple[str, Any]:
    """A critic's column name and its :func:`critic.factory.make_critic` spec: a string names
    itself (a path by its last two parts); a mapping may carry a ``label``."""
    if isinstance(spec, DictConfig):
        spec = OmegaConf.to_container(spec, resolve=True)
    if isinstance(spec, dict):
        spec = dict(spec)
        return str(spec.pop("label", spec.get("name"))), spec
    path = Path(str(spec))
    return ("/".join(path.parts[-2:]) if len(path.parts) > 1 else str(spec)), spec
