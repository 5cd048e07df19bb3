"""Token verification for the coordinator (the issuer itself is shared with the client side)."""

from signaling.tokens import Identity, TokenIssuer

__all__ = ["Identity", "TokenIssuer"]
