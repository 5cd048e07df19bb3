"""Swarm pieces without processes: layout, stamped sources through real codecs, verdicts, merging, the parser."""

from __future__ import annotations

import asyncio
import json
import time

import av
import numpy as np
import pytest

from devices import read_frame_index
from media.codecs import AudioDecoder, AudioEncoder, VideoDecoder, VideoEncoder, VideoEncoderSettings
from media.frames import EncodedVideoFrame, OpusAudioFrame, VideoFrame
from media.source import SourceEnded
from signaling.swarm.checks import Timeline, VideoCheck
from signaling.swarm.errors import InvalidSwarmSpec, ReportError
from signaling.swarm.layout import Layout, MediaSpec, parse_range, parse_video, split, whole_calls
from signaling.swarm.participant import Thresholds, failed_result, verdict
from signaling.swarm.report import merge, render
from signaling.swarm.stamped import (
    CYCLE_BLOCKS,
    VIDEO_CYCLE_MS,
    MarkedTone,
    StampedTestPattern,
    ToneMarks,
    draw_capture_ms,
    read_capture_ms,
    read_index,
    slot_is_silent,
)

pytestmark = pytest.mark.timeout(60)


def test_layout_ids_ranges_and_splits():
    layout = Layout("run1", calls=5, per_call=2)
    assert layout.total == 10 and layout.call_of(7) == 3 and layout.peers(7) == [6]
    assert layout.index_of(layout.user_id(9)) == 9 and layout.index_of("someone-else") is None
    assert len({layout.tone_hz(k) for k in layout.members(2)}) == 2
    assert parse_range("2-5", 10) == range(2, 6) and parse_range("3", 10) == range(3, 4)
    with pytest.raises(InvalidSwarmSpec):
        parse_range("5-10", 10)
    by_calls = split(layout, 2)
    assert by_calls == [range(0, 4), range(4, 10)] and all(whole_calls(layout, r) for r in by_calls)
    assert split(layout, 2, "participants") == [range(0, 5), range(5, 10)]
    assert not whole_calls(layout, range(0, 5))
    assert split(Layout("r", 1, 4), 2) == [range(0, 4)]  # a worker with nothing is dropped
    assert split(Layout("r", 4, 4), 2, "auto") == [range(0, 8), range(8, 16)]  # whole calls divide evenly
    assert split(Layout("r", 3, 4), 2, "auto") == [range(0, 6), range(6, 12)]  # they do not: 6 + 6
    assert parse_video("640x480@30").fps == 30 and parse_video("none") is None
    for bad in ("640x480@0", "641x480", "big"):
        with pytest.raises(InvalidSwarmSpec):
            parse_video(bad)
    with pytest.raises(InvalidSwarmSpec):
        MediaSpec(audio=False, video=None)
    for bad in ({"audio_encoding": "mp3"}, {"video_encoding": "raw"}):
        with pytest.raises(InvalidSwarmSpec):
            MediaSpec(**bad)  # type: ignore[arg-type]
    spec = MediaSpec(video=parse_video("640x480@30"), video_encoding="live")
    assert MediaSpec.from_dict(spec.as_dict()) == spec and "(pre-encoded replay)" in spec.describe()  # the audio
    assert "vp8 640x480@30 (pre-encoded" not in spec.describe()


async def test_capture_stamp_and_index_survive_vp8():
    source = StampedTestPattern(320, 240, 30, phase=0.5)
    await source.start()
    encoder = VideoEncoder(VideoEncoderSettings(codec="vp8", bitrate=400_000, fps=30))
    decoder = VideoDecoder("vp8")
    try:
        for _ in range(6):
            frame = await source.recv()
            stamp = round(frame.capture_time * 1000) % VIDEO_CYCLE_MS  # the time of its slot
            for packet in encoder.encode(frame):
                for decoded in decoder.decode(packet):
                    assert read_capture_ms(decoded) == stamp
                    assert read_frame_index(decoded) == (round(frame.capture_time * 30 - 0.5) + source.shift) % 300
    finally:
        await source.stop()


async def test_a_pre_encoded_pattern_replays_one_cycle_of_its_slots():
    """``preencode``: the 10 s cycle is encoded once; each frame carries the packet of its slot, and
    what that packet decodes to is the frame a live source would have drawn for the slot."""
    source = StampedTestPattern(160, 120, 30, phase=0.25, preencode=True, bitrate=300_000)
    assert source.render_slot(7).data.tobytes() == source.render_slot(7 + 300).data.tobytes()  # periodic
    await source.start()
    assert len(source._cycle) == source.cycle_frames == 300
    keys = [k for k, (_, key) in enumerate(source._cycle) if key]
    assert keys == list(range(0, 300, 15))  # a keyframe every 0.5 s
    decoder = VideoDecoder("vp8")
    try:
        frame = await source.recv()
        slot = source.grid_slot(0)
        assert isinstance(frame, EncodedVideoFrame) and frame.packet == source._cycle[slot % 300][0]
        start = (slot // 15 + 1) * 15  # decode from the next keyframe on, as a subscriber would
        for k in range(start, start + 20):
            packet = source._cycle[k % 300][0]
            (decoded,) = decoder.decode(av.Packet(packet))
            assert read_index(decoded) == (k + source.shift) % 300 != k % 300  # phase 0.25: shifted by 75
            assert read_capture_ms(decoded) == source.stamp_ms(k)
        assert frame.y.shape == (120, 160) and read_index(frame) == (slot + 75) % 300  # pixels made on demand
    finally:
        await source.stop()
    # a rate that does not fill the cycle with whole frames is encoded live
    assert StampedTestPattern(160, 120, 29.97, preencode=True).preencode is False


def test_video_check_counts_modulo_the_cycle_and_unwraps_latency(monkeypatch: pytest.MonkeyPatch):
    """Indices wrap at the cycle (300 frames), stamps at 10 s: a stream falling 14 s behind reads 14 s,
    a 7 s freeze is 7 s of loss (not old frames), a late frame is out of order, a frame whose index
    disagrees with its time is unreadable."""
    from signaling.swarm import checks

    source = StampedTestPattern(160, 120, 30)
    check = VideoCheck(0, Timeline(), fps=30)
    assert check.cycle == 300
    check.window_open = True
    first = round(time.time() * 30) - 30
    order = [*range(first, first + 5), first + 6, first + 5, *range(first + 7, first + 420),
             *range(first + 630, first + 700)]  # a 210-frame freeze
    expected = []
    latency = 0.1
    for k in order:
        latency += 0.035 if k < first + 420 else -0.002  # falls further behind, then catches up a little
        monkeypatch.setattr(checks.time, "time", lambda k=k, latency=latency: k / 30 + latency)
        check.on_frame(source.render_slot(k))
        if k != first + 5:
            expected.append(latency * 1000)
    frame = source.render_slot(first + 800)
    draw_capture_ms(frame, source.stamp_ms(first + 801))  # a time that does not go with its index
    monkeypatch.setattr(checks.time, "time", lambda: (first + 801) / 30 + latency)
    check.on_frame(frame)
    monkeypatch.undo()
    assert check.out_of_order == 1  # first+5 came after first+6
    assert check.lost == 1 + 210  # first+5 (never in order) and the 210 frames of the freeze
    assert check.verified == len(order) - 1 and check.unreadable == 1
    assert max(check.latencies) > 14_000
    assert np.allclose(check.latencies, expected, atol=2.0)


def test_video_check_takes_a_frame_stamped_a_hair_after_its_arrival_in_order(monkeypatch: pytest.MonkeyPatch):
    """At ~1 ms of latency a frame can read a millisecond early (millisecond stamps, the sender's
    pacing); that once read as 9999 ms and counted the frame, and the next, out of order."""
    from signaling.swarm import checks

    source = StampedTestPattern(160, 120, 30)
    check = VideoCheck(0, Timeline(), fps=30)
    check.window_open = True
    first = round(time.time() * 30) - 30
    latencies = [0.002, 0.001, -0.0012, 0.001, 0.002, 0.0015]
    for k, latency in zip(range(first, first + len(latencies)), latencies, strict=True):
        monkeypatch.setattr(checks.time, "time", lambda k=k, latency=latency: k / 30 + latency)
        check.on_frame(source.render_slot(k))
    monkeypatch.undo()
    assert (check.verified, check.out_of_order, check.unreadable, check.lost) == (len(latencies), 0, 0, 0)
    assert min(check.latencies) < 0 and max(check.latencies) < 5


def _mark_latencies(marks: ToneMarks, blocks: list, arrival: float) -> list[float]:
    """Push decoded blocks (arrived at ``arrival``) into ``marks``; the latencies it measured."""
    out = []
    for block in blocks:
        x = block.samples[:, 0].astype(np.float64)
        lat = marks.push(block.pts, float(np.sqrt(np.mean(x * x))), arrival)
        if lat is not None:
            out.append(lat)
    return out


async def test_tone_marks_give_latency_through_opus():
    tone = MarkedTone(450.0, phase=0.375)
    marks = ToneMarks(tone.offset_s)
    encoder, decoder = AudioEncoder(channels=1), AudioDecoder(channels=2)
    await tone.start()
    latencies = []
    try:
        for _ in range(110):  # 2.2 s: at least one complete pair of marks
            frame = await tone.recv()
            for packet in encoder.encode(frame):
                latencies += _mark_latencies(marks, decoder.decode(packet), frame.capture_time + 0.050)
    finally:
        await tone.stop()
    assert latencies, "no mark pair detected"
    assert all(abs(lat - 50.0) <= 25.0 for lat in latencies), latencies


async def test_a_pre_encoded_tone_sends_its_marks_without_an_encoder():
    """``preencode``: one cycle encoded at start; the packets of the frames give the same latency marks."""
    tone = MarkedTone(450.0, phase=0.375, preencode=True)
    marks = ToneMarks(tone.offset_s)
    decoder = AudioDecoder(channels=2)
    await tone.start()
    assert len(tone._cycle) == CYCLE_BLOCKS == 800
    latencies = []
    try:
        for _ in range(110):  # 2.2 s: at least one complete pair of marks
            frame = await tone.recv()
            assert isinstance(frame, OpusAudioFrame)
            slot = tone.grid_slot(frame.pts // 960)
            assert frame.opus == tone._cycle[slot % CYCLE_BLOCKS]
            silent = slot_is_silent(slot)
            assert silent == (not frame.samples.any()) == (frame.level == -127)
            latencies += _mark_latencies(marks, decoder.decode(frame.opus, pts=frame.pts), frame.capture_time + 0.050)
    finally:
        await tone.stop()
    assert latencies, "no mark pair detected"
    assert all(abs(lat - 50.0) <= 25.0 for lat in latencies), latencies
    # a tone that does not repeat on the 20 ms grid is encoded live, as a microphone would be
    assert MarkedTone(455.0, preencode=True).preencode is False


async def test_stop_ends_a_recv_that_waits_for_its_frame():
    source = StampedTestPattern(64, 32, fps=1)
    await source.start()
    await source.recv()  # frame 0, due at the next whole second
    waiting = asyncio.ensure_future(source.recv())  # frame 1 is a second away
    await asyncio.sleep(0.05)
    await source.stop()
    with pytest.raises(SourceEnded):
        await asyncio.wait_for(waiting, 1.0)


def _ok_stream(kind: str) -> dict:
    base = {"streams": 1, "streams_received": 1, "loss": 0.0, "latency_ms_p50": 40.0, "latency_ms_p95": 60.0,
            "latency_ms_trend": 2.0, "verified": True}
    return {**base, "fps": 30.0} if kind == "video" else {**base, "rate": 50.0}


def test_verdicts_name_their_reasons():
    media = MediaSpec(audio=True, video=parse_video("320x240@30"))
    th = Thresholds()
    good = {"error": None, "video": _ok_stream("video"), "audio": _ok_stream("audio")}
    assert verdict(good, media, th) == ("real-time", "")
    late = {**good, "audio": {**_ok_stream("audio"), "latency_ms_p95": 900.0}}
    assert verdict(late, media, th)[0] == "late" and "audio latency p95 900" in verdict(late, media, th)[1]
    lossy = {**late, "video": {**_ok_stream("video"), "fps": 20.0}}
    v, reason = verdict(lossy, media, th)
    assert v == "lossy" and "video 20.0/s" in reason and "latency" in reason
    wrong = {**good, "audio": {**_ok_stream("audio"), "verified": False}}
    assert verdict(wrong, media, th) == ("failed", "audio content not verified")


def _worker(engine: str, index: int, r: range, layout: Layout, media: MediaSpec) -> dict:
    ps = []
    for k in r:
        p = failed_result(k, layout, index, engine, "x")
        p.update(verdict="real-time", reason="", error=None, rate=50.0, latency_ms_p95=80.0, verified=True)
        ps.append(p)
    return {"kind": "callrt-swarm-worker", "version": 1, "run_id": layout.run_id, "engine": engine,
            "worker": index, "host": "h", "cpu": index, "layout": {"calls": layout.calls, "per_call": layout.per_call},
            "participants_range": [r.start, r.stop], "media": media.as_dict(), "seconds": 5.0, "cpu_percent": 40.0,
            "core_percent": 50.0, "rx_frames_per_s": 100.0, "loop_lag_ms_p95": 3.0, "threads": 9, "rss_mb": 100.0,
            "timeline": [], "participants": ps}


def test_merge_marks_uncovered_participants_failed_and_refuses_other_runs():
    layout, media = Layout("runm", 3, 2), MediaSpec()
    w0 = _worker("callrt", 0, range(0, 2), layout, media)
    merged = merge([w0], [{"engine": "callrt", "worker": 1, "range": [2, 4], "reason": "worker 1 was killed"}])
    ps = merged["runs"]["callrt"]["participants"]
    assert [p["verdict"] for p in ps] == ["real-time", "real-time", "failed", "failed", "failed", "failed"]
    assert ps[2]["reason"] == "worker 1 was killed" and ps[4]["reason"] == "no report covers this participant"
    assert merged["runs"]["callrt"]["summary"]["real_time"] == 2 and not merged["ok"]
    # a merged report merges again with the report that covers the rest
    again = merge([merged, _worker("callrt", 1, range(2, 6), layout, media)])
    assert again["ok"] and again["runs"]["callrt"]["summary"]["real_time"] == 6
    assert "targets" in again and "participants real-time" in render(again)
    with pytest.raises(ReportError):
        merge([w0, _worker("callrt", 1, range(2, 6), Layout("other", 3, 2), media)])
    with pytest.raises(ReportError):
        merge([w0, w0])


def test_parser_replaces_the_common_json_and_url_options(monkeypatch):
    from signaling.cli import parse_args

    monkeypatch.delenv("CALLRT_URL", raising=False)
    args = parse_args(["swarm", "--calls", "3", "--video", "640x480@30", "--json", "out.json"])
    assert args.calls == 3 and args.json == "out.json" and args.url is None and callable(args.func)
    assert parse_args(["swarm", "--json"]).json == "-"
    merge_args = parse_args(["swarm", "--merge", "a.json", "b.json"])
    assert merge_args.merge == ["a.json", "b.json"]


@pytest.mark.parametrize(("argv", "url", "api_key", "verbose"), [
    (["--url", "http://coord:3080", "--api-key", "k1", "-v", "swarm"], "http://coord:3080", "k1", 1),
    (["swarm", "--url", "http://coord:3080", "--api-key", "k1", "-v"], "http://coord:3080", "k1", 1),
    (["--url", "http://a:1", "--api-key", "k0", "swarm", "--url", "http://b:2", "--api-key", "k1"], "http://b:2",
     "k1", 0),
])
def test_swarm_takes_the_common_options_before_or_after_its_name(monkeypatch, argv, url, api_key, verbose):
    from signaling.cli import parse_args

    monkeypatch.setenv("CALLRT_API_KEY", "from-env")
    args = parse_args(argv)
    assert (args.url, args.api_key, args.verbose) == (url, api_key, verbose)


@pytest.mark.parametrize("argv", [["--json", "swarm", "--merge"], ["swarm", "--json", "--merge"]])
def test_callrt_json_before_or_after_swarm_prints_the_merged_report(tmp_path, capsys, argv):
    from signaling.cli import main

    layout, media = Layout("runj", 2, 2), MediaSpec()
    paths = []
    for i, r in enumerate((range(0, 2), range(2, 4))):
        paths.append(tmp_path / f"w{i}.json")
        paths[-1].write_text(json.dumps(_worker("callrt", i, r, layout, media)))
    assert main([*argv, *map(str, paths)]) == 0
    merged = json.loads(capsys.readouterr().out)
    assert merged["ok"] and merged["runs"]["callrt"]["summary"]["real_time"] == 4


def test_fast_index_reader_agrees_with_devices():
    from devices import TestPattern
    from signaling.swarm.stamped import read_index

    pattern = TestPattern(640, 480)
    encoder = VideoEncoder(VideoEncoderSettings(codec="vp8", bitrate=300_000, fps=30))
    decoder = VideoDecoder("vp8")
    for i in (0, 1, 77, 123_456, 2**24 - 1):
        frame = VideoFrame(pattern.render(i), pts=i * 3000)
        assert read_index(frame) == read_frame_index(frame) == i
        for packet in encoder.encode(frame):
            for decoded in decoder.decode(packet):
                assert read_index(decoded) == read_frame_index(decoded) == i
    blank = VideoFrame.allocate(640, 480)
    assert read_index(blank) is None and read_frame_index(blank) is None


def test_unknown_experiment_is_a_typed_error():
    from signaling.swarm.experiments import EXPERIMENTS, apply

    assert "no-remb" in EXPERIMENTS
    with pytest.raises(InvalidSwarmSpec, match="known ones"):
        apply(["no-such-thing"])


def test_tone_marks_ignore_a_pair_broken_by_an_rtp_gap():
    from signaling.swarm.stamped import BLOCK, expected_rms

    marks = ToneMarks(offset_s=0.0)
    loud, quiet = expected_rms(), 0.0
    arrival = 1000.5  # wall clock of the first silent block, 0.5 s after a whole second
    assert marks.push(0, loud, arrival - 0.02) is None
    assert marks.push(BLOCK, quiet, arrival) is None  # first mark
    for i in range(2, 6):
        assert marks.push(i * BLOCK, loud, arrival) is None
    lat = marks.push(6 * BLOCK, quiet, arrival + 0.1)  # second mark 5 blocks later: second mod 16 == 1
    assert lat is not None and abs(lat - (arrival - (993 + 0.02)) * 1000) < 1e-6  # 993 = 16 * 62 + 1
    marks = ToneMarks(offset_s=0.0)
    marks.push(0, loud, arrival - 0.02)
    marks.push(BLOCK, quiet, arrival)
    marks.push(3 * BLOCK, loud, arrival)  # a lost packet between the marks
    assert all(marks.push(i * BLOCK, quiet if i == 6 else loud, arrival) is None for i in range(4, 7))


def test_tone_marks_read_slightly_early_are_a_small_negative_latency_not_a_cycle():
    """With no receive buffer in front, latency is ~1 ms and a mark can read a fraction of a
    millisecond before the model's capture time; that once read as 15999.6 ms (one 16 s cycle)."""
    from signaling.swarm.stamped import BLOCK, expected_rms

    marks = ToneMarks(offset_s=0.0)
    loud, quiet = expected_rms(), 0.0
    capture = 993 + 0.02  # the first mark's modelled capture time: second 993 (mod 16 == 1) + 20 ms
    arrival = capture - 0.0004
    assert marks.push(0, loud, arrival - 0.02) is None
    assert marks.push(BLOCK, quiet, arrival) is None
    for i in range(2, 6):
        assert marks.push(i * BLOCK, loud, arrival) is None
    lat = marks.push(6 * BLOCK, quiet, arrival + 0.1)
    assert lat is not None and abs(lat - (-0.4)) < 1e-6, lat


def test_tone_marks_need_a_loud_block_before_a_mark():
    from signaling.swarm.stamped import BLOCK, expected_rms

    marks = ToneMarks(offset_s=0.0)
    loud, quiet = expected_rms(), 0.0
    # the stream starts inside a silent run: that run's start is unknown, so no pair with the next mark
    assert marks.push(0, quiet, 10.0) is None
    assert marks.push(BLOCK, loud, 10.0) is None
    assert marks.push(2 * BLOCK, loud, 10.0) is None
    assert all(marks.push(i * BLOCK, loud, 10.0) is None for i in range(3, 6))
    assert marks.push(6 * BLOCK, quiet, 10.1) is None  # a run start, but its partner was never seen


async def test_a_cycle_that_cannot_be_encoded_leaves_the_pattern_live(monkeypatch: pytest.MonkeyPatch):
    from media.errors import EncodeError

    source = StampedTestPattern(64, 32, 30, preencode=True)

    def refuse() -> list:
        raise EncodeError("vp8 gave 0 packets for one frame")

    monkeypatch.setattr(source, "_encode_cycle", refuse)
    await source.start()
    try:
        frame = await source.recv()
        assert source.preencode is False and not isinstance(frame, EncodedVideoFrame)
        assert read_capture_ms(frame) == source.stamp_ms(source.grid_slot(0))
    finally:
        await source.stop()
