"""Run dirs for the tests of merging and reporting zero-shot RL runs, made from a committed run."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

DEFAULT_RUN = ROOT / "docs" / "results" / "zero_shot_rl_reacher_gamma099"  # seeds 0-2


def run_dir(tmp_path: Path, name: str, edit=None, seed_offset: int = 0, keep=None) -> Path:
    """A run dir whose results.json is the default run of 2026-12-04 (γ 0.99), its seeds
    shifted, its conditions filtered to ``keep`` and its config edited."""
    results = json.loads((DEFAULT_RUN / "results.json").read_text())
    results["runs"] = [
        {**r, "seed": r["seed"] + seed_offset}
        for r in results["runs"]
        if keep is None or r["condition"] in keep
    ]
    if edit:
        edit(results["config"])
    folder = tmp_path / name
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(results))
    return folder
