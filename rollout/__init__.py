"""Generation engines, request batching and the optional-dependency helper.

This is the lowest layer: it imports neither ``critic`` nor ``envs``.
"""
