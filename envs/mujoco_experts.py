"""Scripted experts for the gymnasium MuJoCo tasks (Reacher-v5, Pusher-v5)."""

from __future__ import annotations
