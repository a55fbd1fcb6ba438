"""Datasets the critic learns from: episodes on disk, samples built from them, pretext transforms."""
