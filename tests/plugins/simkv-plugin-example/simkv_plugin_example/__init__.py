"""An example simkv plug-in package (docs/PLUGINS.md)."""
