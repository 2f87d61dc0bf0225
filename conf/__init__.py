"""Hydra configuration shipped with sdg (installed as the package `sdg.conf`)."""
