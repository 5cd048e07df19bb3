"""Idle penalty: the CPU a short step of the media path costs the first time after its thread slept.

    python -m benchmarks.idle [--quick] [--json PATH] [--markdown PATH] [--gaps 1,5,33]

A real-time pipeline sleeps between frames (33 ms at 30 fps), and the event loop's work per frame
is many short steps, each on its own code path: SRTP-protect a packet, ``sendto`` it, split a
frame into RTP payloads, convert a camera frame. Each row times one such step on this thread
(the process's CPU time, ``time.process_time_ns``, so a step that OpenCV splits over its pool
counts whole, as the end-to-end benchmark counts every thread) the first time after
sleeping ``gap`` ms, against the same step back to back (the baseline, same run). On a machine
whose caches survive a short sleep the ratio is near 1; where they do not (a shared VM whose
cores idle), every short step on the loop pays it once per frame, and that, not the number of
packets or bytecodes, sets the end-to-end figure.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import struct
import sys
import time
from collections.abc import Callable
from fractions import Fraction

import av
import numpy as np
from pylibsrtp import Policy, Session

from benchmarks._report import Progress, Record, publish
from media._opencv import cv2
from media.testing import render_pattern
from media.vp8_packetize import Vp8Packetizer

WARM = "the same step back to back"
_PAYLOAD = 1200
"""Bytes of one RTP payload: about what a 640x480 VP8 frame's packets carry at 1.5 Mbps."""


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.idle", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sample counts (for tests; numbers are noise)")
    p.add_argument("--json", metavar="PATH", help="write the records as JSON to PATH")
    p.add_argument("--markdown", metavar="PATH", help="write the markdown table to PATH")
    p.add_argument("--gaps", default="1,5,33", help="sleeps before the timed step, in ms (default 1,5,33)")
    return p.parse_args(argv)


class _Steps:
    """The timed steps, each a no-argument callable that does one unit of work."""

    def __init__(self) -> None:
        key = os.urandom(28)  # AEAD_AES_128_GCM: 16-byte key + 12-byte salt, the profile aiortc negotiates
        self._srtp = Session(policy=Policy(key=key, ssrc_type=Policy.SSRC_ANY_OUTBOUND,
                                           srtp_profile=Policy.SRTP_PROFILE_AEAD_AES_128_GCM))
        self._payload = os.urandom(_PAYLOAD)
        self._seq = 0
        self._tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._tx.bind(("127.0.0.1", 0))
        self._rx.bind(("127.0.0.1", 0))
        self._rx.setblocking(False)
        self._rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self._addr = self._rx.getsockname()
        self._datagram = os.urandom(_PAYLOAD + 40)
        # a real VP8 frame of the test pattern, and a camera frame to convert
        enc = av.CodecContext.create("libvpx", "w")
        enc.width, enc.height, enc.pix_fmt = 640, 480, "yuv420p"
        enc.bit_rate, enc.framerate = 1_500_000, Fraction(30)
        frames = render_pattern(640, 480, 3)
        packets = [p for f in frames for p in enc.encode(av.VideoFrame.from_ndarray(f, format="yuv420p"))]
        packets += list(enc.encode(None))
        self._vp8 = packets[-1]
        self._packer = Vp8Packetizer()
        self._bgr = cv2.cvtColor(frames[0], cv2.COLOR_YUV2BGR_I420)
        self._i420 = np.empty_like(frames[0])

    def srtp_protect(self) -> None:
        self._seq = (self._seq + 1) & 0xFFFF
        self._srtp.protect(struct.pack("!BBHLL", 0x80, 96, self._seq, 0, 1) + self._payload)

    def sendto(self) -> None:
        self._tx.sendto(self._datagram, self._addr)

    def vp8_packetize(self) -> None:
        self._packer.pack(self._vp8)

    def convert(self) -> None:
        cv2.cvtColor(self._bgr, cv2.COLOR_BGR2YUV_I420, dst=self._i420)

    def drain(self) -> None:
        """Empty the receiving socket (untimed), so sends never meet a full buffer."""
        while True:
            try:
                self._rx.recv(65536)
            except BlockingIOError:
                return

    def close(self) -> None:
        self._tx.close()
        self._rx.close()


def _warm_us(step: Callable[[], None], n: int, after: Callable[[], None]) -> float:
    clock = time.process_time_ns
    samples = []
    for i in range(n):
        t0 = clock()
        step()
        samples.append(clock() - t0)
        if i % 16 == 15:
            after()
    after()
    return statistics.median(samples) / 1000.0


def _after_gap_us(step: Callable[[], None], gap_s: float, n: int, after: Callable[[], None]) -> tuple[float, float]:
    """Median CPU of the first call after sleeping ``gap_s``, and of the call right after it."""
    clock = time.process_time_ns
    first, second = [], []
    for _ in range(n):
        time.sleep(gap_s)
        t0 = clock()
        step()
        t1 = clock()
        step()
        t2 = clock()
        first.append(t1 - t0)
        second.append(t2 - t1)
        after()
    return statistics.median(first) / 1000.0, statistics.median(second) / 1000.0


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns a process exit code."""
    args = _parse(argv)
    gaps_ms = [float(g) for g in args.gaps.split(",") if g.strip()]
    if not gaps_ms or any(g <= 0 for g in gaps_ms):
        print("--gaps: positive milliseconds, e.g. 1,5,33", file=sys.stderr)
        return 2
    n_gap, n_warm = (5, 20) if args.quick else (60, 400)
    steps = _Steps()
    rows: list[tuple[str, str, Callable[[], None]]] = [
        ("SRTP protect, one 1.2 KB RTP packet (AES-128-GCM)", "", steps.srtp_protect),
        ("UDP sendto over loopback, 1.2 KB (with the kernel's delivery)", "", steps.sendto),
        ("VP8 frame -> RTP payloads (media.vp8_packetize)", "640x480", steps.vp8_packetize),
        ("BGR -> I420 cv2.cvtColor into a reused buffer", "640x480", steps.convert),
    ]
    progress = Progress(len(rows) * len(gaps_ms), "idle")
    records: list[Record] = []
    try:
        for name, res, step in rows:
            warm = _warm_us(step, n_warm, steps.drain)
            for gap in gaps_ms:
                first, second = _after_gap_us(step, gap / 1000.0, n_gap, steps.drain)
                records.append(Record(f"{name}, first after {gap:g} ms asleep", first, "us", res, WARM, warm,
                                      extra={"second_after_gap_us": round(second, 3), "samples": n_gap,
                                             "warm_samples": n_warm, "gap_ms": gap}))
                progress.step(f"{name.split(',')[0]} after {gap:g} ms")
    finally:
        steps.close()
    publish(records, "Idle penalty (python -m benchmarks idle)", args.json, args.markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
