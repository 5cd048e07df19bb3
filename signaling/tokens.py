"""Tokens: HS256 JWTs signed with the API secret (minted by servers and `ServerClient`, verified by the coordinator).

- user token: ``{"user_id", "iat", "exp"?}``: acts as that user;
- server token: ``{"server": true, "iat"}``: admin routes and calls on behalf of users;
- media token: ``{"user_id", "call_cid", "session_id", "media": true, "exp"}``: handed out by
  ``join`` for the media signaling connection only.

Every failure raises ``Unauthenticated`` with a reason, and never echoes the token or secret.
"""

from __future__ import annotations

import hmac
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import jwt

from signaling.errors import InvalidRequest, Unauthenticated
from signaling.models import USER_ID_PATTERN

_USER_ID_RE = re.compile(USER_ID_PATTERN)
LEEWAY_S = 2
"""Clock skew tolerated on ``exp``/``iat``; the event socket of an expired token closes after it too."""
VERIFIED_CACHE_SIZE = 4096
"""Verified tokens ``TokenIssuer.identify`` remembers."""


@dataclass(frozen=True)
class Identity:
    """Who a request acts as: a user, or the server (``user_id`` is None)."""

    user_id: str | None
    server: bool = False
    expires_at: float | None = None
    """The token's ``exp`` (epoch seconds), if it has one."""

    @property
    def label(self) -> str:
        return "server" if self.server else f"user {self.user_id}"


class TokenIssuer:
    """Creates and verifies tokens with one API key and secret."""

    def __init__(self, api_key: str, api_secret: str) -> None:
        if not api_secret:
            raise ValueError("api_secret must not be empty")
        self.api_key = api_key
        self._secret = api_secret
        self._verified: OrderedDict[str, Identity] = OrderedDict()

    def __repr__(self) -> str:  # never show the secret
        return f"TokenIssuer(api_key={self.api_key!r})"

    def create_user_token(self, user_id: str, expires_in: float | None = None, **claims: Any) -> str:
        if not _USER_ID_RE.fullmatch(user_id):
            raise InvalidRequest(f"invalid user id {user_id!r}: 1 to 64 letters, digits and @ _ . -")
        now = int(time.time())
        payload: dict[str, Any] = {"user_id": user_id, "iat": now, **claims}
        if expires_in is not None:
            payload["exp"] = now + int(expires_in)
        return jwt.encode(payload, self._secret, algorithm="HS256")

    def create_server_token(self) -> str:
        return jwt.encode({"server": True, "iat": int(time.time())}, self._secret, algorithm="HS256")

    def create_media_token(self, user_id: str, call_cid: str, session_id: str, ttl: float = 3600) -> str:
        now = int(time.time())
        return jwt.encode(
            {"user_id": user_id, "call_cid": call_cid, "session_id": session_id, "media": True,
             "iat": now, "exp": now + int(ttl)},
            self._secret, algorithm="HS256",
        )

    def check_api_key(self, api_key: str | None) -> None:
        if api_key is None or not hmac.compare_digest(api_key.encode(), self.api_key.encode()):
            raise Unauthenticated("missing or wrong API key")

    def decode(self, token: str | None) -> dict[str, Any]:
        """Verified claims of any token, or ``Unauthenticated`` saying why."""
        if not token:
            raise Unauthenticated("missing token")
        try:
            return jwt.decode(token, self._secret, algorithms=["HS256"], leeway=LEEWAY_S,
                              options={"require": ["iat"]})
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.InvalidSignatureError:
            raise Unauthenticated("token signature is invalid") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("token is not valid yet") from None
        except jwt.InvalidTokenError as exc:
            raise Unauthenticated(f"malformed token ({type(exc).__name__})") from None

    def identify(self, token: str | None) -> Identity:
        """The identity of a user or server token (media tokens are refused here).

        A token verified once is remembered (bounded, least recently used out): a client sends
        the same token with every request, and checking its HMAC and claims again cost ~10 % of
        the coordinator's CPU under load. Expiry is still checked on every use.
        """
        if token:
            known = self._verified.get(token)
            if known is not None:
                if known.expires_at is None or time.time() < known.expires_at + LEEWAY_S:
                    self._verified.move_to_end(token)
                    return known
                del self._verified[token]  # expired: decode() below says so
        identity = self._identify(token)
        self._verified[token] = identity  # type: ignore[index]  # decode() refused an empty token
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return identity

    def _identify(self, token: str | None) -> Identity:
        claims = self.decode(token)
        if claims.get("media"):
            raise Unauthenticated("a media token cannot be used for the call API")
        exp = claims.get("exp")
        expires_at = float(exp) if isinstance(exp, int | float) else None
        if claims.get("server") is True:
            return Identity(user_id=None, server=True, expires_at=expires_at)
        user_id = claims.get("user_id")
        if not isinstance(user_id, str) or not _USER_ID_RE.match(user_id):
            raise Unauthenticated("token has no valid user_id")
        return Identity(user_id=user_id, expires_at=expires_at)

    def media_claims(self, token: str | None) -> dict[str, Any]:
        claims = self.decode(token)
        if not claims.get("media") or not all(
            isinstance(claims.get(k), str) for k in ("user_id", "call_cid", "session_id")
        ):
            raise Unauthenticated("not a media token")
        return claims
