"""Errors raised by storage backends, translated at each backend's edge."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class StorageError(Exception):
    """A storage operation failed; the underlying error is in ``__cause__``.

    Attributes:
        backend: the name of the backend class that failed.
        operation: the operation that failed (``"get"``, ``"set"`` ...).
    """

    def __init__(self, message: str, *, backend: str = "", operation: str = "") -> None:
        super().__init__(message)
        self.backend = backend
        self.operation = operation


class StorageUnavailableError(StorageError):
    """The store could not be reached (connection refused, reset, timed out)."""


class StorageClosedError(StorageError):
    """The store was used after ``aclose()``."""


class StorageTLSError(StorageError):
    """The store's TLS certificate or host name failed verification.

    Not an outage: trying again cannot help until the configuration (the CA
    certificates, the host name in the URL) or the server's certificate is
    fixed, so a client that raised it does not try again.  The
    ``ssl.SSLCertVerificationError`` is the ``__cause__``.
    """


class StorageUnsupportedError(StorageError, NotImplementedError):
    """The store does not have the optional operation that was asked of it.

    Also a :class:`NotImplementedError`, so code that probes for optional
    operations can catch either.
    """


@contextmanager
def map_storage_errors(
    backend: str,
    operation: str,
    *,
    unavailable: tuple[type[BaseException], ...] = (ConnectionError, TimeoutError),
) -> Iterator[None]:
    """Translate library errors raised inside the block into :class:`StorageError`.

    ``unavailable`` names the error types that mean "could not reach the store";
    they become :class:`StorageUnavailableError`.  Errors that already are
    ``StorageError`` and trio's ``Cancelled`` (a ``BaseException``) pass through.
    """
    try:
        yield
    except StorageError:
        raise
    except unavailable as exc:
        raise StorageUnavailableError(
            f"{backend}.{operation} could not reach the store: {exc!r}",
            backend=backend,
            operation=operation,
        ) from exc
    except Exception as exc:
        raise StorageError(
            f"{backend}.{operation} failed: {exc!r}", backend=backend, operation=operation
        ) from exc
