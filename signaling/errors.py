"""The call API's typed errors. Every error the coordinator sends is ``{code, message, status}``;
the client raises the matching class, so callers switch on the type or on ``code``.

    CallrtError                       (media.errors; root of every package's errors)
    └── SignalingError
        ├── InvalidRequest            invalid_request      400
        │   └── PayloadTooLarge       payload_too_large    413
        ├── Unauthenticated           unauthenticated      401
        ├── PermissionDenied          permission_denied    403
        │   └── BackstageClosed       backstage_closed     403
        ├── NotFound                  not_found            404
        │   ├── CallNotFound          call_not_found       404
        │   └── CallTypeNotFound      call_type_not_found  404
        ├── Conflict                  conflict             409
        │   ├── CallEnded             call_ended           409
        │   └── CallFull              call_full            409
        ├── RateLimited               rate_limited         429
        ├── InternalError             internal_error       500
        ├── ConnectionFailed          connection_failed    503  (client side: coordinator unreachable)
        └── InvalidState              invalid_state        409  (client side: e.g. leave() before join())
"""

from __future__ import annotations

from typing import Any

from media.errors import CallrtError


class SignalingError(CallrtError):
    """Base of the coordinator and call API errors."""

    code = "signaling_error"
    status = 500


class InvalidRequest(SignalingError, ValueError):
    """The request is malformed or a value is out of range."""

    code = "invalid_request"
    status = 400


class PayloadTooLarge(InvalidRequest):
    """A request body, custom data or message exceeds its documented cap."""

    code = "payload_too_large"
    status = 413


class Unauthenticated(SignalingError):
    """Missing, malformed, expired or wrongly signed token, or a wrong API key."""

    code = "unauthenticated"
    status = 401


class PermissionDenied(SignalingError, PermissionError):
    """The user lacks the capability (or team) this operation needs."""

    code = "permission_denied"
    status = 403


class BackstageClosed(PermissionDenied):
    """The call is in backstage and this user may not join yet."""

    code = "backstage_closed"
    status = 403


class NotFound(SignalingError, LookupError):
    """A named thing does not exist."""

    code = "not_found"
    status = 404


class CallNotFound(NotFound):
    """No call with this type and id."""

    code = "call_not_found"
    status = 404


class CallTypeNotFound(NotFound):
    """No call type with this name."""

    code = "call_type_not_found"
    status = 404


class Conflict(SignalingError):
    """The operation conflicts with the current state (e.g. the name exists)."""

    code = "conflict"
    status = 409


class CallEnded(Conflict):
    """The call has ended; only ``join-ended-call`` holders may join."""

    code = "call_ended"
    status = 409


class CallFull(Conflict):
    """The call has reached ``limits.max_participants``."""

    code = "call_full"
    status = 409


class RateLimited(SignalingError):
    """Too many requests; retry later."""

    code = "rate_limited"
    status = 429


class InternalError(SignalingError):
    """An unexpected server failure (a bug); the server keeps serving."""

    code = "internal_error"
    status = 500


class ConnectionFailed(SignalingError, ConnectionError):
    """The coordinator could not be reached or the connection dropped."""

    code = "connection_failed"
    status = 503


class InvalidState(SignalingError):
    """The call is not in a state that allows this (client-side lifecycle error)."""

    code = "invalid_state"
    status = 409


_BY_CODE: dict[str, type[SignalingError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        PayloadTooLarge,
        Unauthenticated,
        PermissionDenied,
        BackstageClosed,
        NotFound,
        CallNotFound,
        CallTypeNotFound,
        Conflict,
        CallEnded,
        CallFull,
        RateLimited,
        InternalError,
        ConnectionFailed,
        InvalidState,
    )
}


def error_from_payload(payload: Any, status: int) -> SignalingError:
    """Rebuild the typed error from a ``{code, message, status}`` body (client side)."""
    if isinstance(payload, dict) and isinstance(payload.get("code"), str):
        cls = _BY_CODE.get(payload["code"], SignalingError)
        err = cls(str(payload.get("message", "")), status=status)
        if cls is SignalingError:
            err.code = payload["code"]
        return err
    return SignalingError(f"unexpected response (HTTP {status}): {str(payload)[:200]}", status=status)


def from_validation_errors(errors: list[dict[str, Any]], prefix: str = "") -> InvalidRequest:
    """One typed error for pydantic validation errors: ``PayloadTooLarge`` for a size cap,
    else ``InvalidRequest`` naming the first bad field."""
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    where = ".".join(str(p) for p in first.get("loc", ()))
    message = f"{prefix}{where}: {first.get('msg', '')}" if where else f"{prefix}{first.get('msg', '')}"
    too_large = any("custom data is" in str(e.get("msg", "")) for e in errors)
    return PayloadTooLarge(message) if too_large else InvalidRequest(message)
