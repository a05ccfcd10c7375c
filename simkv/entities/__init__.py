"""Plain data of the simulation: model architectures, hardware, requests."""
