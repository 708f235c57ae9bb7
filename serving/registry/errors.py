"""Domain errors raised by the service and store; ``problems`` maps each to an HTTP problem document.

The ``slug`` is part of the stable ``type`` URI clients switch on, so it never changes once shipped.
"""

from __future__ import annotations


class RegistryError(Exception):
    status = 400
    slug = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInputError(RegistryError):
    status = 400
    slug = "invalid-input"
    title = "Invalid input"


class NotFoundError(RegistryError):
    status = 404
    slug = "not-found"
    title = "Not found"


class ConflictError(RegistryError):
    status = 409
    slug = "conflict"
    title = "Conflict"


class AlreadyExistsError(ConflictError):
    slug = "already-exists"
    title = "Already exists"


class InUseError(ConflictError):
    slug = "in-use"
    title = "In use"


class InvalidStateError(ConflictError):
    slug = "invalid-state"
    title = "Invalid state for this operation"


class ManifestMismatchError(ConflictError):
    slug = "manifest-mismatch"
    title = "The files listed do not match the files stored"


class PreconditionFailedError(RegistryError):
    status = 412
    slug = "precondition-failed"
    title = "Precondition failed"


class DigestMismatchError(RegistryError):
    status = 400
    slug = "digest-mismatch"
    title = "Artifact digest mismatch"


class PayloadTooLargeError(RegistryError):
    status = 413
    slug = "payload-too-large"
    title = "Payload too large"


class IncompleteUploadError(RegistryError):
    status = 400
    slug = "incomplete-upload"
    title = "Incomplete upload"


class UnauthorizedError(RegistryError):
    status = 401
    slug = "unauthorized"
    title = "Authentication required"


class ForbiddenError(RegistryError):
    status = 403
    slug = "forbidden"
    title = "Forbidden"


class UnavailableError(RegistryError):
    status = 503
    slug = "unavailable"
    title = "Service unavailable"
