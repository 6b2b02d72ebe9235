"""The model-file error family: one exception for every unusable model file."""

from __future__ import annotations


class ModelFileError(Exception):
    """A model file (GGUF, run directory, checkpoint) is missing, truncated, corrupt, foreign
    or incompatible. The message names the file and the problem and says what to do."""
