"""User-facing error types.

Every mistake a user can make (a bad path, a bad flag, a tampered bundle) raises a
subclass of `ZipvlmError`; the CLI catches it once and prints one line (exit 2).
Anything else that escapes is a bug in zipvlm and keeps its traceback.
This module is a leaf: models/, export/ and calib/ import it too.
"""


class ZipvlmError(Exception):
    """A problem the user can fix; its message is one self-contained line."""


class ModelFolderError(ZipvlmError):
    """The Hugging Face folder given with --model cannot be used."""


class ArgumentError(ZipvlmError):
    """A command-line value is out of range or inconsistent with the model."""


class BundleError(ZipvlmError):
    """A bundle directory is missing, of another format, or does not match its manifest."""


class ExportError(ZipvlmError):
    """The exported graph failed a structural check (op set, shapes, checker)."""


class VerificationError(ExportError):
    """onnxruntime disagrees with PyTorch beyond the stated tolerance."""
