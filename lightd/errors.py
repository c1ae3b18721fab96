"""The one error tree of lightd. Services raise these; `api/middleware.py` maps them to HTTP by type.

    LightdError (500, "internal_error")
    ├── BadRequest (400, "bad_request")
    │   ├── ValidationFailed (400, "validation_failed")   a field of a request is wrong; names the field
    │   ├── PathNotAllowed (400, "path_not_allowed")      "..", absolute, NUL, overlong or escaping path
    │   ├── ArchiveRejected (400, "archive_rejected")     unsupported, malformed or over the extraction cap
    │   └── TreeTooDeep (400, "tree_too_deep")            a copy or compress met folders past volumes.max_depth
    ├── Unauthorized (401, "unauthorized")                 missing, malformed, unknown or expired token
    ├── Forbidden (403, "forbidden")                       vendor Accept header missing; token out of scope
    ├── NotFound (404, "not_found")
    ├── Conflict (409, "conflict")                         duplicate, in use, busy (power lock), wrong state
    │   └── DiskQuotaExceeded (409, "disk_quota_exceeded") a write would take a server over limits.disk
    ├── PayloadTooLarge (413, "payload_too_large")
    └── ServiceUnavailable (503, "service_unavailable")
        └── DockerUnavailable (503, "docker_unavailable")  the engine cannot be reached

This module imports nothing from aiohttp: the service layer knows nothing of HTTP.
"""

from __future__ import annotations

from typing import Any


class LightdError(Exception):
    """Root of every error lightd raises on purpose."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": self.message, "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        return body


class BadRequest(LightdError):
    status = 400
    code = "bad_request"


class ValidationFailed(BadRequest):
    code = "validation_failed"


class PathNotAllowed(BadRequest):
    code = "path_not_allowed"


class ArchiveRejected(BadRequest):
    code = "archive_rejected"


class TreeTooDeep(BadRequest):
    code = "tree_too_deep"


class Unauthorized(LightdError):
    status = 401
    code = "unauthorized"


class Forbidden(LightdError):
    status = 403
    code = "forbidden"


class NotFound(LightdError):
    status = 404
    code = "not_found"


class Conflict(LightdError):
    status = 409
    code = "conflict"


class DiskQuotaExceeded(Conflict):
    code = "disk_quota_exceeded"


class PayloadTooLarge(LightdError):
    status = 413
    code = "payload_too_large"


class ServiceUnavailable(LightdError):
    status = 503
    code = "service_unavailable"


class DockerUnavailable(ServiceUnavailable):
    code = "docker_unavailable"
