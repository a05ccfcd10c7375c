"""Plug-in policies, one folder per plug-in point, one file per policy (registered by name)."""
