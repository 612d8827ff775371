"""Scores: decoded atoms compared with the ground truth, and generated samples checked.

Nothing is imported here, so the modules that need no torch import without it.
"""
