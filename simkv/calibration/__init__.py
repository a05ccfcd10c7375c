"""Calibration: Triton microbenchmarks on a real GPU -> efficiency curves -> a hardware profile.

``run`` needs a CUDA GPU (and torch + triton); ``fit`` needs only numpy and pandas, so the
curves can be refitted anywhere from the committed CSVs. docs/CALIBRATION.md.
"""
