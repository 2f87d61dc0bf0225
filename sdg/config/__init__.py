"""Typed configuration: structured-config dataclasses and Hydra composition."""
