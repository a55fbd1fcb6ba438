"""One tiny synthesised Reacher dataset shared by the experiment scripts' end-to-end tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    """12 Reacher episodes (half with failures), 28² frames every 2 steps. Seeds 0..11 cover the
    train and val splits (seed_split: 0 and 5 are test, 10 val)."""
    from envs.plans import plan_episodes
    from envs.synth import synthesize

    root = tmp_path_factory.mktemp("reacher")
    synthesize(plan_episodes("Reacher-v5", 12, 0.5), root, progress_bar=False, every=2,
               image_size=28)  # fmt: skip
    return root
