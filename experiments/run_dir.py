"""Refuse a ``hydra.run.dir=`` that holds an earlier run's results, before hydra writes into it.

An experiment's outputs can be hours of CPU (an RL comparison, a trained critic), and hydra's
run dir is whatever ``hydra.run.dir=`` says: its default is a new timestamp, but a script or a
user that names one can name it twice. :class:`RunDirGuard` is a hydra callback each script's
config lists under ``hydra.callbacks``; its ``on_run_start`` runs before hydra writes the run
dir's ``.hydra/`` record, and it exits with ``<script>: RunDirError: ...`` when the dir holds
what the run would write, unless the run says ``overwrite=true``. A ``--multirun`` sweep writes
each job to its own dir under ``hydra.sweep.dir``: with hydra's numbered job dirs (the default
``hydra.sweep.subdir``), ``on_multirun_start`` refuses a sweep dir whose numbered dirs hold the
script's outputs before the sweep writes anything, and ``on_job_start`` checks each job's own
dir before it runs (a job's outputs, and a custom subdir, can depend on its swept options). The
outputs each script writes are the functions below. Beside the scripts (their folder is on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from rollout.checks import list_option


class RunDirError(ValueError):
    """The run dir holds an earlier run's results, or ``overwrite`` is not a bool."""


def zero_shot_rl_outputs(cfg: DictConfig) -> list[str]:
    """``results.json``, its report and plot (a file of the user's by those names was replaced
    without a word), and each (condition, seed) run's folder when it trains."""
    report = ["results.json", "report.md", "learning_curves.png"]
    if cfg.get("merge") is not None:
        return report
    from rl_results import ExperimentConfigError, expand_seeds

    conditions, seeds = list_option(cfg.get("conditions")), list_option(cfg.get("seeds"))
    with contextlib.suppress(ExperimentConfigError):  # zero_shot_rl's own check says what
        seeds = expand_seeds(seeds)  # seeds=[0,...,9]
    return [*report, *(f"{c}_seed{s}" for c in conditions for s in seeds)]


def eval_critic_outputs(cfg: DictConfig) -> list[str]:
    """``metrics.json``, and the report and plot made from it (a file of the user's by those
    names, in a run dir that held no metrics.json, was replaced or deleted without a word)."""
    return ["metrics.json", "report.md", "calibration.png"]


def train_critic_outputs(cfg: DictConfig) -> list[str]:
    """``history.jsonl``, ``tensorboard/`` and every stage's folder (checkpoints, final weights),
    whichever pipeline wrote them: another run into the dir would append to its history and mix
    its checkpoints with the new ones."""
    from critic.train.config import STAGES

    return ["history.jsonl", "tensorboard", *STAGES]


def train_critic_continues(cfg: DictConfig, run_dir: Path) -> bool:
    """Whether ``resume=`` is a checkpoint in ``run_dir``: the run continues the one there
    (appending to its history, writing its stage and the later ones again), as asked."""
    resume = cfg.get("resume")
    if not isinstance(resume, str):
        return False
    return Path(run_dir).resolve() in Path(resume).resolve().parents


def zero_shot_rl_continues(cfg: DictConfig, run_dir: Path) -> bool:
    """Whether ``resume=true`` asks to continue a stopped experiment in ``run_dir``: its
    finished runs are kept, the others trained (merge= trains nothing, and is refused so)."""
    resume = cfg.get("resume", False)
    if not isinstance(resume, bool):
        raise RunDirError(f"resume={resume!r} must be true or false")
    if resume and cfg.get("merge") is not None:
        raise RunDirError(
            "resume=true continues a stopped training run; merge= trains nothing: drop one"
        )
    return resume


OUTPUTS: dict[str, Callable[[DictConfig], list[str]]] = {
    "zero_shot_rl": zero_shot_rl_outputs,
    "eval_critic": eval_critic_outputs,
    "train_critic": train_critic_outputs,
    # its episodes go to out=, which it resumes; what it writes in the run dir besides its log
    # is found there (_earlier_synthesis)
    "synthesize": lambda cfg: [],
}
# Scripts whose run may continue an earlier run in the same dir (its outputs are not refused).
CONTINUES: dict[str, Callable[[DictConfig, Path], bool]] = {
    "train_critic": train_critic_continues,
    "zero_shot_rl": zero_shot_rl_continues,
}


def check_folder(run_dir: Path, dir_option: str = "hydra.run.dir") -> None:
    """Make ``run_dir`` if missing; :class:`RunDirError` when it is a file or cannot be made."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(
            f"{dir_option}={run_dir} is a file, not a folder; give a folder for the run's outputs"
        )
    try:  # hydra makes it next, and its OSError was a traceback
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(
            f"{dir_option}={run_dir} cannot be made ({exc.strerror or exc}); give a folder you "
            "can write to"
        ) from None


def check_run_dir(
    script: str, cfg: DictConfig, run_dir: Path, dir_option: str = "hydra.run.dir"
) -> None:
    """Raise :class:`RunDirError` when ``run_dir`` holds one of ``script``'s outputs and
    ``cfg.overwrite`` is not true; ``dir_option`` is the option the message says to change."""
    run_dir = Path(run_dir)
    check_folder(run_dir, dir_option)
    overwrite = cfg.get("overwrite", False)
    if not isinstance(overwrite, bool):
        raise RunDirError(f"overwrite={overwrite!r} must be true or false")
    from rl_merge import merge_reads  # (beside this module, as rl_results)

    if script == "zero_shot_rl" and (read := merge_reads(cfg, run_dir)):
        raise RunDirError(
            f"merge= reads {read}, which is this run's {dir_option}: the merged results.json "
            "and report would replace that folder's own (a stopped run's there could no longer "
            f"be resumed); give the merged report a new {dir_option}="
        )
    put_back_record(run_dir)  # a run killed before it set anything else aside
    if (run_dir / REMOVING).exists():  # an earlier run's removal, cut short: finished now
        _remove([run_dir / REMOVING])
    if (run_dir / ASIDE).exists():  # a run killed after overwrite=true set the earlier one aside
        raise RunDirError(
            f"{run_dir / ASIDE} holds an earlier run that overwrite=true set aside, and the run "
            f"that replaced it stopped before it finished; move its contents back into {run_dir} "
            "(its .hydra/ in place of the stopped run's), or delete it, then run again"
        )
    taken = [path.name for path in _outputs_in(script, cfg, run_dir)]
    continues = script in CONTINUES and CONTINUES[script](cfg, Path(run_dir))
    if continues and overwrite:
        raise RunDirError(
            f"overwrite=true would remove resume={cfg.get('resume')}, which lies in {run_dir}; "
            "drop overwrite=true to continue that run there"
            if script == "train_critic"
            else f"overwrite=true would remove the runs resume=true keeps in {run_dir}; drop "
            "one (resume=true trains only the runs missing there)"
        )
    if taken and not overwrite and not continues:
        more = " ..." if len(taken) > 4 else ""
        # another experiment's runs alone (none of this command's names): a resume here would
        # refuse them as runs it does not ask for
        own = set(OUTPUTS[script](cfg)) & set(taken)
        hint = _unfinished(script, cfg, run_dir) if own else ""
        raise RunDirError(
            f"{run_dir} already holds {', '.join(taken[:4])}{more} from an earlier run; give a "
            f"new {dir_option}=, or overwrite=true to replace them{hint}"
        )


def _unfinished(script: str, cfg: DictConfig, run_dir: Path) -> str:
    """For a training run stopped in a stage (a checkpoint, no ``final``): the ``resume=`` that
    continues it, which the refusal named nowhere (overwrite=true would discard it); for an RL
    experiment, ``resume=true``, which keeps its finished runs."""
    if script == "zero_shot_rl" and cfg.get("merge") is None:
        return ", or resume=true to keep the runs it finished and train only the others"
    if script != "train_critic":
        return ""
    from critic.train.checkpoint import latest_checkpoint
    from critic.train.config import STAGES

    for stage in STAGES:
        folder = Path(run_dir) / stage
        if not (folder / "final").exists() and (last := latest_checkpoint(folder)) is not None:
            return f", or resume={last} to continue the run it stopped (in stage {stage})"
    # stopped after a stage finished, before the next one's first checkpoint: the finished
    # stage's final weights continue it (overwrite=true would discard them)
    if (final := last_final(run_dir, cfg.get("pipeline"))) is not None:
        return f", or resume={final} to continue the run after its finished stage"
    return ""


def last_final(run_dir: Path, pipeline: Any) -> Path | None:
    """The ``final`` checkpoint of the last stage of ``pipeline`` finished in ``run_dir``, where a
    stage after it is not finished there: the ``resume=`` that trains the stages left."""
    from critic.train.checkpoint import STATE

    stages = [str(s) for s in list_option(pipeline)]
    finished = [(Path(run_dir) / s / "final" / STATE).is_file() for s in stages]
    # a finished stage with an unfinished one after it (the last stage's final ends the run)
    left = [i for i, done in enumerate(finished) if done and not all(finished[i + 1 :])]
    return Path(run_dir) / stages[max(left)] / "final" if left else None


ASIDE = ".overwritten"  # where overwrite=true keeps an earlier run until this one has trained
# where it goes to be removed, at once: a removal cut short (a large run takes a while) leaves
# it here, no longer an earlier run to put back, and the next run in the dir finishes it
REMOVING = ".overwritten-removing"


def _earlier_rl_runs(cfg: DictConfig, run_dir: Path) -> list[str]:
    """The (condition, seed) runs another zero_shot_rl experiment finished in ``run_dir`` (each
    with its record), whatever this command's conditions and seeds: a new run beside them left a
    dir whose runs ran with two configs, which its merge= joined."""
    if cfg.get("merge") is not None:
        return []
    return sorted(p.parent.name for p in Path(run_dir).glob("*_seed*/result.json"))


def _earlier_synthesis(cfg: DictConfig, run_dir: Path) -> list[str]:
    """The copies of another dataset's summary and contact sheet an earlier synthesize run left in
    ``run_dir`` (a run into the same dir for another ``out=`` replaced them, and the record of
    the run, without a word). A re-run for the same dataset resumes it and writes its summary
    again: nothing is refused, as where the run dir is the dataset folder itself."""
    import json

    out, run_dir = cfg.get("out"), Path(run_dir)
    if not isinstance(out, str) or not out:  # synthesize's own check names it
        return []
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        # the dataset's absolute path; a summary from before it was recorded gives out= as it
        # was typed, read from the folder that run started in (its hydra record says which)
        earlier = summary.get("dataset_path") or _from_recorded_cwd(run_dir, summary["dataset"])
        if Path(earlier).resolve() == Path(out).resolve():
            return []
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # none, or unreadable: whatever is there is listed
    sheets = sorted(p.name for p in run_dir.glob("contact_sheet_*.png"))
    return ["summary.json", "summary.md", *sheets]


def _from_recorded_cwd(run_dir: Path, path: str) -> str:
    """``path`` as the run recorded in ``run_dir`` read it: from the folder it started in."""
    from omegaconf import OmegaConf

    cwd = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra.runtime.cwd
    return str(Path(cwd) / path)


# Outputs of an earlier run that a script's own names (OUTPUTS) do not cover.
FOUND: dict[str, Callable[[DictConfig, Path], list[str]]] = {
    "zero_shot_rl": _earlier_rl_runs,
    "synthesize": _earlier_synthesis,
}


def _outputs_in(script: str, cfg: DictConfig, run_dir: Path) -> list[Path]:
    names = list(OUTPUTS[script](cfg))
    names += [n for n in FOUND.get(script, lambda *_: [])(cfg, run_dir) if n not in names]
    return [Path(run_dir) / n for n in names if (Path(run_dir) / n).exists()]


def _remove(paths: list[Path]) -> None:
    import shutil

    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def set_aside_outputs(script: str, cfg: DictConfig, run_dir: Path, keep: list = ()) -> Path | None:
    """``overwrite=true``: move what an earlier run of ``script`` wrote in ``run_dir`` into
    ``run_dir/.overwritten/``, so that the dir holds this run's outputs alone; returns that folder
    (``None`` when there was nothing). :func:`restore_outputs` puts them back if this run stops
    before it trains (a model that does not load, no samples), :func:`discard_outputs` removes
    them once it has: a run refused at its start loses no earlier run.

    Raises:
        RunDirError: one of ``keep`` (the paths this run reads: its starting weights, a teacher)
            lies in an output it would move.
    """
    taken = _outputs_in(script, cfg, run_dir)
    for path in (Path(str(k)) for k in keep if k is not None):
        inside = [
            t
            for t in taken
            if path.exists() and t.resolve() in (path.resolve(), *path.resolve().parents)
        ]
        if inside:
            put_back_record(Path(run_dir))
            raise RunDirError(
                f"overwrite=true would remove {inside[0]}, and this run reads {path} from it; "
                "copy it elsewhere first, or give a new hydra.run.dir="
            )
    if not taken:
        return None
    aside = Path(run_dir) / ASIDE
    aside.mkdir(exist_ok=True)  # RunDirGuard may have kept the earlier .hydra/ there
    moved: list[Path] = []
    try:
        for path in taken:
            path.rename(aside / path.name)
            moved.append(path)
    except BaseException:  # a Ctrl-C between two moves: the earlier run whole, where it was
        for path in reversed(moved):
            (aside / path.name).rename(path)
        if not any(aside.iterdir()):
            aside.rmdir()
        put_back_record(Path(run_dir))  # (where the guard kept the earlier .hydra/ there)
        raise
    return aside


def put_back_record(run_dir: Path) -> None:
    """The earlier run's ``.hydra/`` that :class:`RunDirGuard` kept aside, back in place of the
    refused run's, when nothing else was moved yet (a run stopped before it set its outputs
    aside); nothing when there is no such copy."""
    aside = run_dir / ASIDE
    if aside.is_dir() and [p.name for p in aside.iterdir()] == [".hydra"]:
        _remove([p for p in [run_dir / ".hydra"] if p.exists()])
        (aside / ".hydra").rename(run_dir / ".hydra")
        aside.rmdir()


def restore_outputs(script: str, cfg: DictConfig, run_dir: Path, aside: Path | None) -> None:
    """Put back what :func:`set_aside_outputs` moved, in place of this run's own outputs."""
    if aside is None or not aside.is_dir():
        return
    _remove(_outputs_in(script, cfg, run_dir))
    for path in aside.iterdir():
        _remove([p for p in [Path(run_dir) / path.name] if p.exists()])  # this run's .hydra/
        path.rename(Path(run_dir) / path.name)
    aside.rmdir()


def discard_outputs(aside: Path | None) -> None:
    """Remove the earlier run :func:`set_aside_outputs` kept: this run has trained. It is first
    renamed :data:`REMOVING`, so that a removal cut short is never taken for an earlier run to
    put back half-deleted in place of this run's outputs."""
    if aside is not None and aside.is_dir():
        removing = aside.parent / REMOVING
        _remove([removing] if removing.exists() else [])
        aside.rename(removing)
        _remove([removing])


class RunDirGuard(Callback):
    """:func:`check_run_dir` before hydra writes anything into the run dir.

    Args:
        script: the script's name (a key of :data:`OUTPUTS`), which also starts its message.
    """

    def __init__(self, script: str) -> None:
        if script not in OUTPUTS:
            raise ValueError(f"RunDirGuard(script={script!r}): scripts are {list(OUTPUTS)}")
        self.script = script
        self._lock = None  # the run dir's, held while the run writes there

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().set_config(config)  # so hydra.run.dir=...${hydra:job.name} resolves
        if not str(config.hydra.run.dir or "").strip():  # hydra.run.dir=$RUN with RUN unset: the
            # current folder (the repository's root) took the run's outputs
            sys.exit(
                f"{self.script}: RunDirError: hydra.run.dir={config.hydra.run.dir!r} is empty; give "
                "a folder for the run's outputs, e.g. hydra.run.dir=outputs/<name>"
            )
        # the lock first: the check moves an earlier run's record back into place, and read a
        # running run's files as a stopped run's ("move them back", "resume=" a live run)
        self._take(Path(config.hydra.run.dir))
        self._check(config, Path(config.hydra.run.dir))
        self._keep_record(config, Path(config.hydra.run.dir))

    def _keep_record(self, config: DictConfig, run_dir: Path) -> None:
        """``overwrite=true``: the earlier run's ``.hydra/`` (the options a resume needs, the
        record of what its results are) goes aside with its outputs (:func:`set_aside_outputs`),
        before hydra writes this run's. So does an RL experiment's under ``resume=true``, until
        its finished runs are found to match this run's options: a resume refused for other
        options put the stopped run's record back (it names the options to resume with)."""
        import os
        import shutil

        record = run_dir / ".hydra"
        resumes = self.script == "zero_shot_rl" and config.get("resume") is True
        if config.get("overwrite") is not True and not resumes:
            return
        if os.environ.get("RANK", "0") != "0":  # under torchrun, the first process's to keep
            return
        if record.is_dir() and _outputs_in(self.script, config, run_dir):
            shutil.copytree(record, run_dir / ASIDE / ".hydra")

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        from rollout.files import release

        release(self._lock)
        self._lock = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.core.hydra_config import HydraConfig
        from omegaconf import OmegaConf

        HydraConfig.instance().set_config(config)
        subdir = OmegaConf.to_container(config.hydra.sweep, resolve=False).get("subdir")
        # jobs named otherwise: each job's own check; and synthesize's, whose refusal reads each
        # job's own out= (the sweep's config holds none of the jobs' values)
        if subdir != "${hydra.job.num}" or self.script == "synthesize":
            return
        sweep = Path(config.hydra.sweep.dir)  # the jobs write 0, 1, 2, ...: an earlier sweep's
        for job_dir in sorted(sweep.iterdir()) if sweep.is_dir() else []:
            if job_dir.is_dir() and job_dir.name.isdigit():
                self._check(config, job_dir, "hydra.sweep.dir")

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra.types import RunMode

        if config.hydra.mode == RunMode.MULTIRUN:  # a single run was checked by on_run_start
            self._take(Path(config.hydra.runtime.output_dir), "hydra.sweep.dir")
            self._check(config, Path(config.hydra.runtime.output_dir), "hydra.sweep.dir")

    def on_job_end(self, config: DictConfig, job_return: Any = None, **kwargs: Any) -> None:
        from hydra.types import RunMode

        if config.hydra.mode == RunMode.MULTIRUN:
            self.on_run_end(config)

    def _take(self, run_dir: Path, option: str = "hydra.run.dir") -> None:
        """Hold the run dir's lock while the run writes there: a second run into it (the guard's
        check passes both while neither has written) mixed or replaced the first's files. Under
        torchrun the first process holds it for all. A dir where no lock can be written (read
        only, a folder named ``.lock``) is refused: hydra turned the error into a warning, and
        the run went on without a lock, or failed at its log file with a traceback."""
        import errno
        import os

        from rollout.files import FolderBusyError, lock_folder

        try:
            check_folder(run_dir, option)
            if os.environ.get("RANK", "0") != "0":
                return
            self._lock = lock_folder(run_dir, f"{self.script} run (hydra.run.dir=)")
        except (RunDirError, FolderBusyError) as exc:
            sys.exit(f"{self.script}: RunDirError: {exc}")
        except OSError as exc:
            sys.exit(
                f"{self.script}: RunDirError: {exc.strerror}" if exc.errno == errno.EISDIR else
                f"{self.script}: RunDirError: {option}={run_dir} cannot be written to "
                f"({exc.strerror or exc}); give a folder you can write to"
            )  # fmt: skip

    def _check(self, config: DictConfig, run_dir: Path, option: str = "hydra.run.dir") -> None:
        import os

        if os.environ.get("RANK", "0") != "0":  # under torchrun the first process checks for all:
            return  # another's check moved its kept record back, or refused its .overwritten/
        try:
            check_run_dir(self.script, config, run_dir, option)
        except RunDirError as exc:
            self.on_run_end(config)  # the lock given back before the process ends
            sys.exit(f"{self.script}: RunDirError: {exc}")
