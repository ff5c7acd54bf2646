"""The SDK's error types. Each derives from :class:`PipnetError` and keeps the standard base its
condition has always had, so ``except ValueError`` or ``except FileNotFoundError`` still catches it.
This module imports nothing: ``from pipnet_sdk import PipnetError`` costs nothing."""

from __future__ import annotations


class PipnetError(Exception):
    """Base of every error the SDK raises on purpose."""


class ModelNotFoundError(PipnetError, FileNotFoundError):
    """No usable file for a model name or path."""


class ChecksumError(PipnetError, ValueError):
    """A model file's sha256 differs from the one pinned in the registry or carried in the file."""


class ModelFormatError(PipnetError, ValueError):
    """The file is not a model this SDK can use."""


class ImageError(PipnetError, ValueError):
    """An input that cannot be used as an image: unreadable, too large, or in a form the SDK does
    not convert (see :mod:`pipnet_sdk.images`)."""
