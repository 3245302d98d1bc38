"""Editing an adapter's spectrum: decomposition, calibration, the policies and post-hoc edits, the edit itself."""
