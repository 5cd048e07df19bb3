"""Media signaling messages (the mesh): JSON over the media WebSocket handed out by ``join``.

Client → coordinator: ``join`` (media token, subscribe flag, published kinds), ``signal``
(an SDP offer/answer or a renegotiation request for one other session of the same call),
``publish`` (the kinds being sent now: the mute state), ``ping``.
Coordinator → client: ``joined`` (own session and the peers), ``peer_joined``,
``peer_updated``, ``peer_left``, ``signal`` (relayed, with ``from``), ``error``, ``pong``,
``call_ended``, ``kicked``.

The coordinator relays only between joined sessions of one call, checks the sender's
``send-audio``/``send-video`` against ``publish`` and against the SDP's directions, and
refuses malformed SDP before it reaches a peer.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from signaling.models import TrackKind

MAX_SDP_BYTES = 32 * 1024


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SessionDescription(_Msg):
    type: Literal["offer", "answer"]
    sdp: str = Field(max_length=MAX_SDP_BYTES)


class PeerInfo(BaseModel):
    session_id: str
    user_id: str
    tracks: list[TrackKind] = Field(default_factory=list)
    """Kinds this peer is sending now (muted kinds are absent)."""
    subscribe: bool = True
    """Whether this peer receives media (False: it only sends, or is signaling-only)."""


# ---------------------------------------------------------------- client → coordinator


class JoinMsg(_Msg):
    type: Literal["join"]
    token: str = Field(max_length=4096)
    subscribe: bool = True
    tracks: list[TrackKind] = Field(default_factory=list, max_length=3)


class SignalMsg(_Msg):
    type: Literal["signal"]
    to: str = Field(min_length=1, max_length=64)
    description: SessionDescription | None = None
    renegotiate: bool = False
    """Ask the offerer of the pair for a new offer (the answerer cannot offer)."""


class PublishMsg(_Msg):
    type: Literal["publish"]
    tracks: list[TrackKind] = Field(max_length=3)


class PingMsg(_Msg):
    type: Literal["ping"]


ClientMessage = Annotated[JoinMsg | SignalMsg | PublishMsg | PingMsg, Field(discriminator="type")]
client_message = TypeAdapter(ClientMessage)


def server_message(kind: str, **fields: Any) -> dict[str, Any]:
    """A coordinator → client message."""
    return {"type": kind, **fields}


# ---------------------------------------------------------------- SDP checks

_M_LINE = re.compile(r"^m=(audio|video|application) \d+ [A-Z/]+(?: [\w-]+)*$")


def sdp_sending_kinds(sdp: str) -> set[str]:
    """Kinds (audio/video) whose m-section has a sending direction; raises ValueError if malformed."""
    lines = sdp.replace("\r\n", "\n").strip().split("\n")
    if not lines or lines[0].strip() != "v=0":
        raise ValueError("an SDP starts with 'v=0'")
    if not any(line.startswith("o=") for line in lines) or not any(line.startswith("s=") for line in lines):
        raise ValueError("an SDP has o= and s= lines")
    sending: set[str] = set()
    kind: str | None = None
    direction = "sendrecv"
    sections = 0

    def close_section() -> None:
        if kind in ("audio", "video") and direction in ("sendrecv", "sendonly"):
            sending.add(kind)

    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise ValueError(f"malformed SDP line {line[:40]!r}")
        if line.startswith("m="):
            close_section()
            if not _M_LINE.match(line):
                raise ValueError(f"malformed media line {line[:60]!r}")
            kind = line[2:].split(" ", 1)[0]
            direction = "sendrecv"
            sections += 1
        elif line in ("a=sendrecv", "a=sendonly", "a=recvonly", "a=inactive") and kind is not None:
            direction = line[2:]
    close_section()
    if sections == 0:
        raise ValueError("an SDP for a call has at least one m= section")
    return sending
