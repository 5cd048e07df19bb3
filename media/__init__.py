"""NumPy frame types, colour conversion, the encode/decode path, tracks and receive sinks.

``media`` imports neither ``signaling`` nor ``devices``.

Publishing (one source to many peers)::

    fanout = EncodedVideoFanout(camera, "vp8", bitrate=1_000_000, fps=30)
    sender = fanout.add_to(pc)          # per peer: subscribe + addTrack + keyframe/REMB hook
    fanout.pause(); fanout.resume()     # mute / unmute without renegotiation
    fanout.replace_source(other_camera)
    audio = EncodedAudioFanout(microphone)  # one Opus encoder for every peer
    audio.add_to(pc)
    raw = FrameFanout(source)           # raw frames; aiortc encodes per peer

Received audio (and, in a one-CPU process, video) is decoded on the loop, video otherwise on
aiortc's thread with a cheaper hand-off; decoded frames wait in bounded queues::

    prepare_receiver(transceiver.receiver) # before negotiation; idempotent; all four of:
    hook_decoder(receiver)                 #   where it decodes ("loop" or "thread"), bounded queues
    prompt_assembly(receiver)              #   frames decode when complete (video: marker), not frames later
    recover_stalls(receiver)               #   video frozen on a packet lost for good: skip it, ask a keyframe
    lean_receive(receiver)                 #   its RTP from the socket straight to it (less Python per packet)

Receiving::

    sink = VideoSink(remote_track)      # drains in a task, bounded, drops the oldest
    async for frame in sink: ...        # PlanarVideoFrame views, no copy
    bgr = sink.to_bgr()                 # only when asked, into a reused buffer
"""

from media.audio import JitterBuffer, PlayoutBuffer, Rechunker, Resampler, float_to_int16, int16_to_float
from media.avframes import audio_from_av, audio_to_av, from_av, to_av
from media.codecs import (
    AudioDecoder,
    AudioEncoder,
    AudioEncoderSettings,
    VideoDecoder,
    VideoEncoder,
    VideoEncoderSettings,
)
from media.convert import Converter, PixelFormat, from_i420, resize_i420, to_i420
from media.errors import (
    CallrtError,
    CodecError,
    CodecUnavailable,
    ConversionError,
    DecodeError,
    EncodeError,
    MediaError,
    PipelineClosed,
    UnsupportedFormat,
)
from media.fanout import EncodedAudioFanout, EncodedVideoFanout, FanoutStats, FrameFanout, PeerStats
from media.frame_assembly import InOrderAudioBuffer, MarkerJitterBuffer, prompt_assembly
from media.frames import (
    AUDIO_SAMPLE_RATE,
    VIDEO_TIME_BASE,
    AudioFrame,
    EncodedVideoFrame,
    OpusAudioFrame,
    PlanarVideoFrame,
    VideoFrame,
)
from media.inline_decode import concealment_stats, decode_on_loop, hook_decoder
from media.loss_concealment import ConcealmentStats
from media.receive_path import ReceivePath, prepare_receiver
from media.rtp_receive import LeanReceive, lean_receive
from media.sinks import AudioSink, SinkStats, VideoSink
from media.source import AudioSource, Source, SourceEnded, VideoSource
from media.stall_recovery import StallWatch, recover_stalls
from media.tracks import EncodedTrack, FrameTrack, SourceTrack, prefer_codec

__all__ = [
    "AUDIO_SAMPLE_RATE",
    "VIDEO_TIME_BASE",
    "AudioDecoder",
    "AudioEncoder",
    "AudioEncoderSettings",
    "AudioFrame",
    "AudioSink",
    "AudioSource",
    "CallrtError",
    "CodecError",
    "CodecUnavailable",
    "ConcealmentStats",
    "ConversionError",
    "Converter",
    "DecodeError",
    "EncodeError",
    "EncodedAudioFanout",
    "EncodedTrack",
    "EncodedVideoFanout",
    "EncodedVideoFrame",
    "FanoutStats",
    "FrameFanout",
    "FrameTrack",
    "InOrderAudioBuffer",
    "JitterBuffer",
    "LeanReceive",
    "MarkerJitterBuffer",
    "MediaError",
    "OpusAudioFrame",
    "PeerStats",
    "PipelineClosed",
    "PixelFormat",
    "PlanarVideoFrame",
    "PlayoutBuffer",
    "ReceivePath",
    "Rechunker",
    "Resampler",
    "SinkStats",
    "Source",
    "SourceEnded",
    "SourceTrack",
    "StallWatch",
    "UnsupportedFormat",
    "VideoDecoder",
    "VideoEncoder",
    "VideoEncoderSettings",
    "VideoFrame",
    "VideoSink",
    "VideoSource",
    "audio_from_av",
    "audio_to_av",
    "concealment_stats",
    "decode_on_loop",
    "float_to_int16",
    "from_av",
    "from_i420",
    "hook_decoder",
    "int16_to_float",
    "lean_receive",
    "prefer_codec",
    "prepare_receiver",
    "prompt_assembly",
    "recover_stalls",
    "resize_i420",
    "to_av",
    "to_i420",
]
