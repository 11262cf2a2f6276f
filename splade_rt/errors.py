"""Errors that name the problem and the fix.

Every failure a user can cause (bad model, bad files, bad text, missing GPU) is raised as one of
these, so the CLIs can print one line and exit 2 instead of a traceback from deep in a library.
"""

from __future__ import annotations


class SpladeError(Exception):
    """Base class: the message is meant to be shown to the user as is."""


class ModelSourceError(SpladeError):
    """The model to export can't be used: not found, not SPLADE, unsupported architecture."""


class ExportDirError(SpladeError):
    """An exported directory is missing, incomplete, corrupt or from a newer format."""


class DeviceError(SpladeError):
    """The requested execution device can't run here."""


class DatasetError(SpladeError):
    """A retrieval dataset directory is missing files or holds malformed lines."""


class CorpusError(SpladeError):
    """A corpus to encode can't be read as given (bad file, bad row), or an output directory holds a
    different run: named with the file and line, so the data can be fixed before hours of encoding."""


class OverloadedError(SpladeError):
    """A micro-batcher's queue is full: the text was not accepted, and retrying later may succeed
    (splade-serve answers 429). Raised at once rather than after a wait, so load sheds instead of piling up."""
