"""callrt's whole receive path on one aiortc receiver, installed in one call.

``prepare_receiver(receiver)``, before the receiver starts receiving, installs in order:
``media.inline_decode.hook_decoder`` (where decoding runs, one hand-off, bounded queues),
``media.frame_assembly.prompt_assembly`` (a video frame is decoded when its last packet
arrives, an audio packet when the ones before it have been), ``media.stall_recovery``'s
``recover_stalls`` (video frozen on a packet lost for good resumes) and
``media.rtp_receive.lean_receive`` (less Python per packet). Each is idempotent, touches this
one receiver only, and leaves it as aiortc made it where aiortc's internals differ; a call's
peer connections (``signaling.rtc.peer``) use it for every transceiver.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiortc import RTCRtpReceiver

from media.frame_assembly import prompt_assembly
from media.inline_decode import Placement, hook_decoder
from media.rtp_receive import LeanReceive, lean_receive
from media.stall_recovery import StallWatch, recover_stalls


@dataclass(frozen=True)
class ReceivePath:
    """What ``prepare_receiver`` installed (None / False: left as aiortc made it, or not for this kind)."""

    decoding: Placement | None
    """Where frames are decoded: ``"loop"`` or ``"thread"``."""
    prompt_assembly: bool
    """Frames go to the decoder when complete (video: at the marker packet; audio: in order at once)."""
    stall_watch: StallWatch | None
    """Video only."""
    lean: LeanReceive | None


def prepare_receiver(receiver: RTCRtpReceiver) -> ReceivePath:
    """Install callrt's receive path on ``receiver`` (module doc); call before it receives. Idempotent."""
    decoding = hook_decoder(receiver)
    prompt = prompt_assembly(receiver)
    watch = recover_stalls(receiver)
    return ReceivePath(decoding, prompt, watch, lean_receive(receiver))
