"""Packaged Hydra configuration (YAML): the defaults, model specs and experiments."""
