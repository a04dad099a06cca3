"""Mapping botocore failures onto the blob-store's typed errors (``storage.ports``)."""

from __future__ import annotations

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from storage.ports import (
    AccessDenied,
    BlobStoreError,
    EntityTooSmall,
    InvalidPart,
    NoSuchUpload,
    NotFound,
    Unavailable,
)

_BY_CODE: dict[str, type[BlobStoreError]] = {
    "NoSuchKey": NotFound,
    "NoSuchBucket": NotFound,
    "NotFound": NotFound,
    "404": NotFound,
    "NoSuchUpload": NoSuchUpload,
    "EntityTooSmall": EntityTooSmall,
    "InvalidPart": InvalidPart,
    "InvalidPartOrder": InvalidPart,
    "AccessDenied": AccessDenied,
    "InvalidAccessKeyId": AccessDenied,
    "SignatureDoesNotMatch": AccessDenied,
    "403": AccessDenied,
    "SlowDown": Unavailable,
    "ServiceUnavailable": Unavailable,
    "InternalError": Unavailable,
    "RequestTimeout": Unavailable,
}

_UNREACHABLE = (EndpointConnectionError, ConnectionClosedError, ConnectTimeoutError, ReadTimeoutError)


def translate(error: Exception, *, operation: str, key: str = "") -> BlobStoreError:
    """The typed error for a botocore/aiohttp failure of ``operation`` on ``key``."""
    where = f"{operation} {key}".strip()
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        message = error.response.get("Error", {}).get("Message") or str(error)
        kind = _BY_CODE.get(code)
        if kind is None:
            if status == 404:
                kind = NotFound
            elif status == 403:
                kind = AccessDenied
            elif status >= 500:
                kind = Unavailable
            else:
                kind = BlobStoreError
        return kind(f"{where}: {code or status}: {message}", code=code or str(status), key=key)
    if isinstance(error, _UNREACHABLE):
        return Unavailable(f"{where}: store unreachable: {error}", code="Unreachable", key=key)
    if isinstance(error, BotoCoreError | OSError | TimeoutError):
        return Unavailable(f"{where}: {type(error).__name__}: {error}", code="Unreachable", key=key)
    return BlobStoreError(f"{where}: {type(error).__name__}: {error}", key=key)
