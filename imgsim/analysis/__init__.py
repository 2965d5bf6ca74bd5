"""Analyses over a built catalogue: why two images are similar, and near-duplicate groups."""
