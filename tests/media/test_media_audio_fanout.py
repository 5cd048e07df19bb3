"""Encode each microphone once: real aiortc peer connections over loopback, tones checked at every receiver."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from aiortc import RTCRtpSender
from aiortc.rtp import compute_audio_level_dbov

from media.avframes import audio_to_av
from media.codecs import AudioEncoder, AudioEncoderSettings
from media.fanout import EncodedAudioFanout, audio_level_dbov
from media.frames import AudioFrame, OpusAudioFrame
from media.inline_decode import MAX_QUEUED, _InlineDecoder, decode_on_loop
from media.sinks import AudioSink
from media.testing import ToneAudioSource, dominant_frequency
from tests.media.helpers import connect, eventually

pytestmark = pytest.mark.timeout(60)


async def tone_of(sink: AudioSink, frames: int = 40) -> tuple[float, int]:
    """(dominant frequency, peak) of ``frames`` received frames after the first 10."""
    await eventually(lambda: sink.received >= frames, timeout=10)
    got = [await asyncio.wait_for(sink.recv(), 5) for _ in range(frames)]
    pcm = np.concatenate([f.samples for f in got[10:]])
    return dominant_frequency(pcm, got[0].sample_rate), int(np.abs(pcm).max())


async def test_one_opus_encoder_feeds_three_peers_each_hears_the_tone() -> None:
    tone = ToneAudioSource(660.0, channels=1, frame_ms=20)
    await tone.start()
    pcs = []
    try:
        async with EncodedAudioFanout(tone) as fanout:
            sinks = []
            for _ in range(3):
                a, b, sink = await connect(fanout.add_to, lambda t: AudioSink(t, maxsize=200))
                pcs += [a, b]
                sinks.append(sink)
            for sink in sinks:
                hz, peak = await tone_of(sink)
                assert abs(hz - 660) < 10
                assert peak > 3000
            # one encode per source frame (20 ms mono in, one 20 ms packet out), not one per peer
            assert fanout.frames_handled > 0
            assert fanout.packets <= fanout.frames_handled
            assert len(fanout._encoders) == 1 and 1 in fanout._encoders  # mono stays mono
            assert all(t.sent > 20 for t in fanout.tracks)
            for sink in sinks:
                await sink.aclose()
    finally:
        await tone.stop()
        for pc in pcs:
            await pc.close()


async def test_48k_stereo_and_resampled_44k1_sources_both_arrive() -> None:
    for rate, channels in ((48_000, 2), (44_100, 1)):
        tone = ToneAudioSource(440.0, channels=channels, sample_rate=rate)
        await tone.start()
        async with EncodedAudioFanout(tone) as fanout:
            a, b, sink = await connect(fanout.add_to, lambda t: AudioSink(t, maxsize=200))
            try:
                hz, peak = await tone_of(sink)
            finally:
                await sink.aclose()
                await a.close()
                await b.close()
            assert abs(hz - 440) < 10, (rate, channels, hz)
            assert peak > 3000
            assert (fanout._resampler is not None) == (rate != 48_000)
        await tone.stop()


async def test_pcmu_only_peer_falls_back_to_its_own_encoder_and_still_hears() -> None:
    tone = ToneAudioSource(500.0, channels=1, frame_ms=20)
    await tone.start()

    def add(pc) -> None:  # type: ignore[no-untyped-def]
        fanout.add_to(pc)
        caps = RTCRtpSender.getCapabilities("audio").codecs
        pc.getTransceivers()[0].setCodecPreferences([c for c in caps if c.mimeType == "audio/PCMU"])

    async with EncodedAudioFanout(tone) as fanout:
        a, b, sink = await connect(add, lambda t: AudioSink(t, maxsize=200))
        try:
            hz, _ = await tone_of(sink)
            modes = [t.mode for t in fanout.tracks]
        finally:
            await sink.aclose()
            await a.close()
            await b.close()
        assert abs(hz - 500) < 15
        assert modes == ["raw"]
        assert fanout.packets == 0  # nothing was Opus-encoded for a PCMU peer
    await tone.stop()


def test_audio_level_matches_aiortc_for_mono_frames() -> None:
    rng = np.random.default_rng(1)
    for amplitude in (0, 30, 1000, 20000):
        samples = (rng.standard_normal((960, 1)) * amplitude).clip(-32768, 32767).astype(np.int16)
        theirs = compute_audio_level_dbov(audio_to_av(AudioFrame(samples, 48_000, 0)))
        assert audio_level_dbov(samples) == theirs


async def test_received_audio_decodes_on_the_loop_and_the_thread_ends_on_close() -> None:
    tone = ToneAudioSource(880.0, channels=1, frame_ms=20)
    await tone.start()
    before = {t.ident for t in threading.enumerate()}
    async with EncodedAudioFanout(tone) as fanout:
        hooked: list[tuple[bool, object]] = []
        a, b, sink = await connect(fanout.add_to, lambda t: AudioSink(t, maxsize=200),
                                   on_receiver=lambda r: hooked.append((decode_on_loop(r), r)))
        try:
            hz, _ = await tone_of(sink)
            assert abs(hz - 880) < 10
            [(applied, receiver)] = hooked
            assert applied is True
            stand_in = receiver._RTCRtpReceiver__decoder_queue
            assert isinstance(stand_in, _InlineDecoder) and stand_in.decoded >= 40
            assert decode_on_loop(receiver) is True  # idempotent
        finally:
            await sink.aclose()
            await a.close()
            await b.close()
    await tone.stop()
    # aiortc's parked decoder thread ended with the receiver (nothing left behind)
    await eventually(lambda: not any(t.ident not in before and t.name == "audio-decoder"
                                     for t in threading.enumerate()), timeout=5)


async def test_a_consumer_that_falls_behind_loses_old_audio_not_latency() -> None:
    """Nobody drains the track for a second: 200 ms wait at most, the rest was dropped oldest first."""
    tone = ToneAudioSource(440.0, channels=1, frame_ms=20)
    await tone.start()
    async with EncodedAudioFanout(tone) as fanout:
        hooked: list[tuple[bool, object]] = []
        a, b, track = await connect(fanout.add_to, lambda t: t,
                                    on_receiver=lambda r: hooked.append((decode_on_loop(r), r)))
        try:
            [(applied, receiver)] = hooked
            stand_in = receiver._RTCRtpReceiver__decoder_queue
            assert applied and stand_in.max_queued == MAX_QUEUED["audio"] == 10
            await eventually(lambda: stand_in.decoded >= 50, timeout=10)  # a second of audio, unread
            assert track._queue.qsize() <= 10
            assert stand_in.dropped >= stand_in.decoded - 10 > 0
            # what is left is the most recent audio: its pts are the last ones decoded
            frames = [await asyncio.wait_for(track.recv(), 5) for _ in range(track._queue.qsize())]
            pts = [f.pts for f in frames]
            assert pts == sorted(pts) and pts[-1] - pts[0] <= 10 * 960
        finally:
            await a.close()
            await b.close()
    await tone.stop()


class _PreencodedTone(ToneAudioSource):
    """A 660 Hz tone whose frames carry Opus packets of a 990 Hz tone: what a receiver hears tells which was sent."""

    def __init__(self, frame_ms: int = 20) -> None:
        super().__init__(660.0, channels=1, frame_ms=frame_ms)
        self._encoder = AudioEncoder(AudioEncoderSettings(channels=1))

    async def recv(self) -> AudioFrame:
        frame = await super().recv()
        n = frame.num_samples
        t = (np.arange(n) + frame.pts) / frame.sample_rate
        other = (np.sin(2 * np.pi * 990.0 * t) * 0.3 * 32767).astype(np.int16).reshape(-1, 1)
        packets = self._encoder.encode(AudioFrame(other, frame.sample_rate, frame.pts))
        opus = bytes(packets[0]) if len(packets) == 1 else b""
        return OpusAudioFrame(frame.samples, frame.sample_rate, frame.pts, frame.capture_time, opus=opus, level=-7)


@pytest.mark.parametrize(("frame_ms", "heard_hz"), [(20, 990.0), (10, 660.0)], ids=["one-packet", "10ms"])
async def test_a_pre_encoded_frame_is_sent_as_it_is_and_its_samples_serve_the_rest(frame_ms: int,
                                                                                    heard_hz: float) -> None:
    """20 ms frames: their packets go out (990 Hz heard). 10 ms frames cannot be one 20 ms packet:
    their samples are encoded (660 Hz heard)."""
    src = _PreencodedTone(frame_ms=frame_ms)
    await src.start()
    pcs = []
    try:
        async with EncodedAudioFanout(src) as fanout:
            a, b, sink = await connect(fanout.add_to, lambda t: AudioSink(t, maxsize=200))
            pcs += [a, b]
            hz, _ = await tone_of(sink)
            assert abs(hz - heard_hz) < 10
            if frame_ms == 20:
                assert fanout.passed_through == fanout.packets > 20
                assert fanout._encoders == {}  # nothing was encoded here
                assert next(iter(fanout.tracks))._last_level == -7  # the frame's own level, not recomputed
            else:
                assert fanout.passed_through == 0 and fanout.packets > 10
            await sink.aclose()
    finally:
        await src.stop()
        for pc in pcs:
            await pc.close()
