"""One exception type for every V2 error, carrying the HTTP status that both front ends map from.

The HTTP front end answers ``{"error": message}`` with ``status``; the gRPC front end maps the same
status to a gRPC code, so a bad request is reported the same way on both protocols.
"""

from __future__ import annotations


class InferenceError(Exception):
    """A request the runtime refuses or could not serve; ``status`` is the HTTP status code."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def bad_request(message: str) -> InferenceError:
    return InferenceError(message, 400)


def not_found(message: str) -> InferenceError:
    return InferenceError(message, 404)


def unavailable(message: str) -> InferenceError:
    return InferenceError(message, 503)
