"""``callrt bot``: one headless participant on a running coordinator, until told to stop.

Sources are chosen by spec: video ``pattern[:WxH]``, ``camera[:INDEX_OR_URL]``, ``file:PATH``,
``screen[:DISPLAY]``, ``lavfi:GRAPH``, ``none``; audio ``tone[:HZ]``, ``mic[:NAME]``,
``file:PATH``, ``none``. ``--speaker`` plays the first remote participant's audio.
SIGINT/SIGTERM leave the call cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import signal
import sys
import time
from typing import Any

from media.frames import AUDIO_SAMPLE_RATE, AudioFrame
from media.source import Source
from signaling.cli_args import parse_resolution
from signaling.client import Client
from signaling.errors import InvalidRequest
from signaling.rtc.remote import RemoteTrack
from signaling.tokens import TokenIssuer


def video_source(spec: str, width: int, height: int) -> Source[Any] | None:
    """A video source from a ``kind[:arg]`` spec (see the module doc)."""
    import devices

    kind, _, arg = spec.partition(":")
    if kind == "none":
        return None
    if kind == "pattern":
        if arg:
            try:
                width, height = parse_resolution(arg)
            except InvalidRequest as exc:
                raise InvalidRequest(f"--video {spec}: {exc.message}") from None
        return devices.TestPattern(width, height)
    if kind == "camera":
        device: int | str = int(arg) if arg.isdigit() else (arg or 0)
        return devices.Camera(device, width=width, height=height)
    if kind == "file":
        return devices.VideoFile(arg, width=width, height=height)
    if kind == "screen":
        return devices.ScreenCapture(arg or None, width=width, height=height)
    if kind == "lavfi":
        return devices.FFmpegSource(arg, format="lavfi", width=width, height=height)
    raise InvalidRequest(f"unknown video source {spec!r}: use pattern, camera, file, screen, lavfi or none")


def audio_source(spec: str) -> Source[Any] | None:
    import devices

    kind, _, arg = spec.partition(":")
    if kind == "none":
        return None
    if kind == "tone":
        try:
            frequency = float(arg) if arg else 440.0
        except ValueError:
            frequency = math.nan
        if not 0 < frequency < AUDIO_SAMPLE_RATE / 2:
            raise InvalidRequest(f"--audio {spec}: the tone's frequency must be a number of Hz "
                                 f"between 0 and {AUDIO_SAMPLE_RATE // 2}, e.g. tone:440")
        return devices.Tone(frequency)
    if kind == "mic":
        device: int | str | None = int(arg) if arg.isdigit() else (arg or None)
        return devices.Microphone(device)
    if kind == "file":
        return devices.AudioFile(arg, loop=True)
    raise InvalidRequest(f"unknown audio source {spec!r}: use tone, mic, file or none")


async def run_bot(args: argparse.Namespace) -> int:
    call_type, _, call_id = args.call.partition(":")
    if not call_id:
        raise InvalidRequest("--call is TYPE:ID, e.g. default:my-call")
    token = args.token
    if not token:
        if not args.api_secret:
            raise InvalidRequest("give --token, or --api-secret (CALLRT_API_SECRET) to mint one for --user")
        token = TokenIssuer(args.api_key or "", args.api_secret).create_user_token(args.user)
    if not args.api_key:
        raise InvalidRequest("set --api-key or CALLRT_API_KEY")
    width, height = parse_resolution(args.resolution)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    video, audio = video_source(args.video, width, height), audio_source(args.audio)  # bad specs: before connecting
    speaker = None
    async with Client(args.url, api_key=args.api_key, token=token) as client:
        call = client.call(call_type, call_id)
        if video is None:
            await call.camera.disable()
        else:
            await call.camera.select(video)
            await call.camera.enable()
        if audio is None:
            await call.microphone.disable()
        else:
            await call.microphone.select(audio)
            await call.microphone.enable()
        if args.speaker:
            import devices

            speaker = devices.Speaker()
            await speaker.start()
            playing: list[asyncio.Task[Any]] = []

            def on_track(track: RemoteTrack) -> None:
                if track.kind == "audio" and not playing:
                    audio_sink = track.sink
                    out = speaker

                    async def play() -> None:
                        async for frame in audio_sink:
                            if isinstance(frame, AudioFrame):
                                await out.play(frame)
                    playing.append(asyncio.ensure_future(play()))

            call.on("track.added", on_track)
        t0 = time.perf_counter()
        await call.join(create=args.create, auto_subscribe=not args.no_subscribe)
        _say(args, {"event": "joined", "call": call.cid, "session_id": call.session_id,
                    "join_ms": round((time.perf_counter() - t0) * 1000, 1),
                    "camera": call.camera.status.value, "microphone": call.microphone.status.value,
                    "camera_error": str(call.camera.error) if call.camera.error else None,
                    "microphone_error": str(call.microphone.error) if call.microphone.error else None})
        deadline = time.monotonic() + args.seconds if args.seconds else None
        while not stop.is_set() and call.media is not None:
            timeout = args.stats_interval
            if deadline is not None:
                timeout = min(timeout, max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout)
            _say(args, _stats(call))
            if deadline is not None and time.monotonic() >= deadline:
                break
        if call.media is not None:
            await call.leave()
            _say(args, {"event": "left", "call": call.cid})
        else:
            _say(args, {"event": "disconnected", "call": call.cid, "calling_state": call.state.calling_state.value})
    if speaker is not None:
        await speaker.stop()
    return 0


def _stats(call: Any) -> dict[str, Any]:
    remotes = []
    for p in call.remote_participants.values():
        entry: dict[str, Any] = {"user_id": p.user_id, "tracks": p.published_tracks}
        for kind in ("video", "audio"):
            sink = getattr(p, kind)
            if sink is not None:
                s = sink.stats()
                entry[kind] = {"received": s.received, "fps": round(s.fps, 1), "dropped": s.dropped}
        remotes.append(entry)
    return {"event": "stats", "t": round(time.time(), 3), "participants": len(call.state.participants),
            "remote": remotes}


def _say(args: argparse.Namespace, record: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(record), flush=True)
        return
    if record["event"] == "stats":
        parts = [f"{r['user_id']}: " + ", ".join(f"{k} {r[k]['fps']} fps ({r[k]['received']} rx)"
                                               for k in ("video", "audio") if k in r) for r in record["remote"]]
        print(f"[stats] {record['participants']} in call; " + ("; ".join(parts) or "no remote media"), flush=True)
    else:
        print(" ".join(f"{k}={v}" for k, v in record.items() if v is not None), flush=True)
    sys.stdout.flush()
