"""The one error tree of lightd. Services raise these; `lightd/http_errors.py` maps them to HTTP by type.

    LightdError (500, "internal_error")
    ├── BadRequest (400, "bad_request")
    │   ├── ValidationFailed (400, "validation_failed")   a field of a request is wrong; names the field
    │   ├── PathNotAllowed (400, "path_not_allowed")      "..", absolute, NUL, overlong or escaping path
    │   ├── ArchiveRejected (400, "archive_rejected")     unsupported, malformed or over the extraction cap
    │   ├── TreeTooDeep (400, "tree_too_deep")            a copy or compress met folders past volumes.max_depth
    │   └── AddressNotAllowed (400, "address_not_allowed") a pull's URL reaches a refused network (SSRF guard)
    ├── Unauthorized (401, "unauthorized")                 missing, malformed, unknown or expired token
    │   ├── SignedUrlInvalid (401, "signed_url_invalid")   a signed URL's token is missing, malformed or forged
    │   ├── SignedUrlExpired (401, "signed_url_expired")
    │   └── SignedUrlUsed (401, "signed_url_used")         a one-shot URL already used
    ├── Forbidden (403, "forbidden")                       vendor Accept header missing; token out of scope
    │   ├── SignedUrlMismatch (403, "signed_url_mismatch") a signed URL used for another purpose or target
    │   └── FileDenied (403, "file_denied")                a path the server's template file denylist names
    ├── NotFound (404, "not_found")
    ├── MethodNotAllowed (405, "method_not_allowed")
    ├── Conflict (409, "conflict")                         a state that forbids the request (not running, ...)
    │   ├── AlreadyExists (409, "already_exists")          a container, pool port or file of that name exists
    │   ├── PowerActionInProgress (409, "power_action_in_progress")   the server's power lock is held
    │   ├── ServerInstalling (409, "server_installing")   the server is (re)installing
    │   ├── ServerRestoring (409, "server_restoring")     a backup is being restored into the server's volume
    │   ├── ServerTransferring (409, "server_transferring")   the server is being moved to another node
    │   ├── BackupQuotaExceeded (409, "backup_quota_exceeded")   local backups would pass backups.max_local_bytes
    │   ├── PortInUse (409, "port_in_use")                 a pool port is held by a container
    │   ├── VolumeInUse (409, "volume_in_use")             a container uses the volume
    │   ├── DiskQuotaExceeded (409, "disk_quota_exceeded") a write would take a server over limits.disk
    │   ├── TooManyPulls (409, "too_many_pulls")           a volume already runs volumes.pull_max_concurrent pulls
    │   └── NotMovable (409, "not_movable")                a transfer of a server whose volumes other servers share
    ├── PayloadTooLarge (413, "payload_too_large")
    ├── RangeNotSatisfiable (416, "range_not_satisfiable")   a Range beyond the end of the file
    ├── EngineError (502, "engine_error")                  the engine refused an operation
    ├── BackupStorageError (502, "backup_storage_error")   the backup store (S3) refused or failed an operation
    ├── PullFailed (502, "pull_failed")                    a pull's remote server failed it (status, connection)
    └── ServiceUnavailable (503, "service_unavailable")
        └── DockerUnavailable (503, "engine_unavailable")  the engine cannot be reached

Every body is `{"error": message, "code": code, "details": {...}}`: `details` is always an object (empty
when there is nothing to add). A validation failure's names the field at fault (`field`) and lists every
problem (`errors`: `[{"field", "message"}]`).

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
        details = self.details
        if details is None:
            details = {}
        elif isinstance(details, list):  # field problems of a validation: the first one names the field
            first = details[0] if details and isinstance(details[0], dict) else {}
            details = {"field": first.get("field"), "errors": details}
        elif not isinstance(details, dict):
            details = {"reason": details}
        return {"error": self.message, "code": self.code, "details": details}


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


class AddressNotAllowed(BadRequest):
    code = "address_not_allowed"


class Unauthorized(LightdError):
    status = 401
    code = "unauthorized"


class SignedUrlInvalid(Unauthorized):
    code = "signed_url_invalid"


class SignedUrlExpired(Unauthorized):
    code = "signed_url_expired"


class SignedUrlUsed(Unauthorized):
    code = "signed_url_used"


class Forbidden(LightdError):
    status = 403
    code = "forbidden"


class SignedUrlMismatch(Forbidden):
    code = "signed_url_mismatch"


class FileDenied(Forbidden):
    code = "file_denied"


class NotFound(LightdError):
    status = 404
    code = "not_found"


class Conflict(LightdError):
    status = 409
    code = "conflict"


class MethodNotAllowed(LightdError):
    status = 405
    code = "method_not_allowed"


class AlreadyExists(Conflict):
    code = "already_exists"


class PowerActionInProgress(Conflict):
    code = "power_action_in_progress"


class ServerInstalling(Conflict):
    code = "server_installing"


class ServerRestoring(Conflict):
    code = "server_restoring"


class ServerTransferring(Conflict):
    code = "server_transferring"


class BackupQuotaExceeded(Conflict):
    code = "backup_quota_exceeded"


class PortInUse(Conflict):
    code = "port_in_use"


class VolumeInUse(Conflict):
    code = "volume_in_use"


class DiskQuotaExceeded(Conflict):
    code = "disk_quota_exceeded"


class TooManyPulls(Conflict):
    code = "too_many_pulls"


class NotMovable(Conflict):
    code = "not_movable"


class PayloadTooLarge(LightdError):
    status = 413
    code = "payload_too_large"


class RangeNotSatisfiable(LightdError):
    """No byte of a requested Range lies within the file (`size`: its length, for `Content-Range: */size`)."""

    status = 416
    code = "range_not_satisfiable"

    def __init__(self, message: str, *, size: int) -> None:
        super().__init__(message, details={"size": size})
        self.size = size


class EngineError(LightdError):
    """The engine refused an operation (a 5xx or an unexpected answer from it)."""

    status = 502
    code = "engine_error"


class PullFailed(LightdError):
    """A pull's remote server answered an error status, or could not be reached or read."""

    status = 502
    code = "pull_failed"


class BackupStorageError(LightdError):
    """The remote backup store (S3) refused an operation or could not be reached."""

    status = 502
    code = "backup_storage_error"


class ServiceUnavailable(LightdError):
    status = 503
    code = "service_unavailable"


class DockerUnavailable(ServiceUnavailable):
    code = "engine_unavailable"


ERROR_CODES: tuple[str, ...] = tuple(sorted({cls.code for cls in (
    LightdError, BadRequest, ValidationFailed, PathNotAllowed, ArchiveRejected, TreeTooDeep, Unauthorized,
    Forbidden, NotFound, MethodNotAllowed, Conflict, AlreadyExists, PowerActionInProgress, ServerInstalling,
    PortInUse, VolumeInUse, DiskQuotaExceeded, PayloadTooLarge, RangeNotSatisfiable, EngineError, ServiceUnavailable,
    DockerUnavailable, AddressNotAllowed, SignedUrlInvalid, SignedUrlExpired, SignedUrlUsed, SignedUrlMismatch,
    TooManyPulls, PullFailed, ServerRestoring, ServerTransferring, BackupQuotaExceeded, BackupStorageError)}))
"""Every `code` an error body can carry (README and the OpenAPI document list them)."""
