"""Project exceptions and the exit codes the command line maps them to.

Every message names the object at fault (image, layer, package, file or field) and what to try
next. Messages never contain credentials.
"""

from __future__ import annotations


class SutureError(Exception):
    """Base class for every error suture reports to a user; exit code 1."""

    exit_code = 1


class UsageError(SutureError):
    """Invalid command-line input (bad flag value, bad reference); exit code 2."""

    exit_code = 2


class InvalidReferenceError(UsageError):
    """An image reference that does not parse."""


class ImageError(SutureError):
    """An image, manifest, config or layer that is missing, malformed or fails verification."""


class DigestMismatchError(ImageError):
    """Content whose sha256 differs from the digest that named it."""


class RegistryError(SutureError):
    """A registry request that failed (HTTP error, auth failure, exhausted retries)."""


class AuthError(RegistryError):
    """Credentials missing or rejected by a registry."""


class TransportError(SutureError):
    """A local image location (layout, archive, daemon) that cannot be read or written."""


class UnsafePathError(ImageError):
    """A tar or deb member whose path or link would escape the root."""


class EcosystemError(SutureError):
    """A package database, repository or package file that cannot be used."""


class UnsupportedImageError(EcosystemError):
    """An image whose distribution or package database suture cannot patch yet."""


class RepositoryError(EcosystemError):
    """A package repository that cannot be fetched or fails verification."""


class SignatureError(RepositoryError):
    """Repository metadata with a missing, invalid or untrusted OpenPGP signature."""


class PackageError(EcosystemError):
    """A package file that is malformed, unsafe or fails its hash check."""


class PlanError(EcosystemError):
    """An update plan that cannot be satisfied (dependency, conflict)."""


class ReportError(SutureError):
    """A scanner report that is malformed, empty or contradicts the image."""


class CommandTimeoutError(SutureError):
    """The whole command ran past --timeout."""


class CommandInterruptedError(SutureError):
    """The command was stopped with Ctrl-C; exit code 130, as a shell gives for SIGINT."""

    exit_code = 130
