"""Camera, microphone, speaker, file and synthetic sources; device listing.

Every source implements ``media.source.VideoSource`` / ``AudioSource``: ``start()`` opens
the device (or raises a ``DeviceError`` that names it and the fix), ``recv()`` returns the
next frame at the source's real pace, ``stop()`` releases the device.

    video: Camera, ScreenCapture, FFmpegSource, VideoFile, TestPattern (+ read_frame_index)
    audio: Microphone, AudioFile, Tone (+ dominant_frequency, rms_level); output: Speaker
    stand-in IP camera: MJPEGServer (numbered MJPEG-over-HTTP stream)
    listing: list_devices() -> DeviceList of DeviceInfo; format_devices() renders it
"""

from devices.audio_file import AudioFile
from devices.camera import Camera
from devices.errors import (
    BackendMissing,
    DeviceBusy,
    DeviceError,
    DeviceGone,
    DeviceNotFound,
    DeviceUnavailable,
    UnreadableFile,
)
from devices.ffmpeg import FFmpegSource
from devices.listing import DeviceInfo, DeviceList, format_devices, list_devices
from devices.microphone import Microphone
from devices.mjpeg_server import MJPEGServer
from devices.pattern import TestPattern, read_frame_index
from devices.screen import ScreenCapture
from devices.speaker import Speaker
from devices.tone import Tone, dominant_frequency, rms_level
from devices.video_file import VideoFile

__all__ = [
    "AudioFile",
    "BackendMissing",
    "Camera",
    "DeviceBusy",
    "DeviceError",
    "DeviceGone",
    "DeviceInfo",
    "DeviceList",
    "DeviceNotFound",
    "DeviceUnavailable",
    "FFmpegSource",
    "MJPEGServer",
    "Microphone",
    "ScreenCapture",
    "Speaker",
    "TestPattern",
    "Tone",
    "UnreadableFile",
    "VideoFile",
    "dominant_frequency",
    "format_devices",
    "list_devices",
    "read_frame_index",
    "rms_level",
]
