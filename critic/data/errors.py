"""The typed error of reading and writing datasets (episodes, their videos, external labels)."""

from __future__ import annotations


class EpisodeFormatError(ValueError):
    """An episode file is missing, corrupt, truncated, or disagrees with its metadata."""
