"""The root of callrt's error tree, shared by every package.

    CallrtError (code, message, status)
    ├── media.errors.MediaError ...        (codec, conversion, track failures; tree on MediaError)
    ├── devices.errors.DeviceError ...     (camera, microphone, speaker, files)
    └── signaling.errors.* ...             (coordinator, call API, transport)

It lives in ``media`` because ``media`` is the package every other one may import.
Each error has a stable, snake_case ``code`` that programs can switch on; ``message``
is for people.
"""

from __future__ import annotations


class CallrtError(Exception):
    """Base of every error callrt raises on purpose."""

    code: str = "callrt_error"
    """Stable machine-readable code (snake_case); subclasses override it."""
    status: int = 500
    """HTTP-style status, meaningful for errors that cross the coordinator's wire."""

    def __init__(self, message: str = "", *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message or self.__class__.__name__)
        self.message = message or self.__class__.__name__
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def to_dict(self) -> dict[str, object]:
        """The wire form ``{code, message, status}``."""
        return {"code": self.code, "message": self.message, "status": self.status}

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(code={self.code!r}, message={self.message!r})"


class MediaError(CallrtError):
    """Base of every media-pipeline error (conversion, codecs, tracks, sinks).

        MediaError                      media_error
        ├── UnsupportedFormat           unsupported_format   (also ValueError)
        ├── ConversionError             conversion_failed
        ├── CodecError                  codec_error
        │   ├── CodecUnavailable        codec_unavailable
        │   ├── EncodeError             encode_failed
        │   └── DecodeError             decode_failed
        └── PipelineClosed              pipeline_closed      (a closed fan-out, track or sink was used)
    """

    code = "media_error"


class UnsupportedFormat(MediaError, ValueError):
    """A pixel format, sample format, size or codec name the pipeline does not handle."""

    code = "unsupported_format"
    status = 400


class ConversionError(MediaError):
    """OpenCV or libswscale/libswresample failed to convert a frame."""

    code = "conversion_failed"


class CodecError(MediaError):
    """An encoder or decoder failed."""

    code = "codec_error"


class CodecUnavailable(CodecError):
    """The FFmpeg build lacks the requested codec (e.g. libx264 missing)."""

    code = "codec_unavailable"


class EncodeError(CodecError):
    """The encoder rejected a frame."""

    code = "encode_failed"


class DecodeError(CodecError):
    """The decoder rejected a packet (corrupt data, missing keyframe)."""

    code = "decode_failed"


class PipelineClosed(MediaError):
    """A fan-out, track or sink was used after ``aclose()``."""

    code = "pipeline_closed"
    status = 409
