"""Capabilities, roles and the built-in call types: the grant matrix, enforced here only.

A user's roles for a call are their global role, their member role in that call
(``call_member`` when a member has none) and ``host`` when they created it. Their
capabilities are the union of what the call type grants those roles. A call with a
``team`` is invisible to users outside that team, whatever their roles.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from signaling.models import CAPABILITIES

_ALL = list(CAPABILITIES)
_MEDIA = ["send-audio", "send-video", "screenshare"]
_HOST = [
    "read-call",
    "join-call",
    "join-backstage",
    "update-call",
    "update-call-settings",
    "update-call-member",
    "end-call",
    "mute-users",
    *_MEDIA,
]

_LISTENER_GRANTS = {
    # audio rooms and livestreams: hosts speak and show video; users and members listen and watch
    "admin": _ALL,
    "moderator": [*_HOST, "join-ended-call"],
    "host": _HOST,
    "user": ["create-call", "read-call", "join-call"],
    "call_member": ["read-call", "join-call"],
    "guest": ["read-call", "join-call"],
}

BUILTIN_CALL_TYPES: dict[str, dict[str, Any]] = {
    "default": {
        "grants": {
            "admin": _ALL,
            "moderator": [*_HOST, "join-ended-call"],
            "host": _HOST,
            "user": ["create-call", "read-call", "join-call", *_MEDIA],
            "call_member": ["read-call", "join-call", *_MEDIA],
            "guest": ["read-call", "join-call", "send-audio", "send-video"],
        },
        "settings": {},
    },
    "audio_room": {
        "grants": _LISTENER_GRANTS,
        "settings": {
            "audio": {"mic_default_on": False},
            "video": {"enabled": False, "camera_default_on": False},
            "backstage": {"enabled": True},
        },
    },
    "livestream": {
        "grants": _LISTENER_GRANTS,
        "settings": {
            "audio": {"mic_default_on": False},
            "video": {"camera_default_on": False, "target_resolution": {"width": 1280, "height": 720,
                                                                       "bitrate": 2_500_000}},
            "backstage": {"enabled": True},
        },
    },
    "development": {
        "grants": {role: _ALL for role in ("admin", "moderator", "host", "user", "call_member", "guest")},
        "settings": {},
    },
}


def roles_for(user_role: str, member_role: str | None, is_member: bool, is_creator: bool) -> set[str]:
    """The roles a user holds in one call."""
    roles = {user_role}
    if is_member:
        roles.add(member_role or "call_member")
    if is_creator:
        roles.add("host")
    return roles


def capabilities_for(grants: Mapping[str, Iterable[str]], roles: Iterable[str]) -> set[str]:
    """Union of the capabilities the call type grants to ``roles``."""
    caps: set[str] = set()
    for role in roles:
        caps.update(grants.get(role, ()))
    return caps


def sorted_capabilities(caps: Iterable[str]) -> list[str]:
    """Capabilities in the canonical order of ``CAPABILITIES``."""
    s = set(caps)
    return [c for c in CAPABILITIES if c in s]
