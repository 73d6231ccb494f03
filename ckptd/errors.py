"""Error types. Every message is one line that names the file and the fix."""

from __future__ import annotations


class CkptdError(Exception):
    """A user-facing failure. ``permanent`` means retrying the same job cannot help."""

    permanent: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(CkptdError):
    permanent = True


class ConversionError(CkptdError):
    """Bad or unsupported input: corrupt file, shape mismatch, unknown architecture."""

    permanent = True


class UnsupportedArchitectureError(ConversionError):
    pass


class UnsafePickleError(ConversionError):
    pass


class SourceRemovedError(ConversionError):
    """The trainer deleted the checkpoint while we were reading it."""


class IncompleteCheckpointError(CkptdError):
    """The checkpoint is still being written; try again later."""

    permanent = False


class OutputExistsError(CkptdError):
    permanent = True


class StagingBusyError(CkptdError):
    """Another live process holds this output's staging lock (e.g. a paused worker): retry later."""

    permanent = False


class LeaseLostError(CkptdError):
    """This worker no longer owns the job (lease expired and was taken over): stop, write nothing."""

    permanent = False
