"""Scripted experts for the robosuite tasks (Lift, Stack, Door, PickPlaceCan), through OSC."""

from __future__ import annotations
