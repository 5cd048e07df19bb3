"""Device sources: capture-to-recv latency and CPU per source kind, each next to a same-run baseline.

For every source kind and size, two runs of the same length on the same live input:

* **callrt**: the ``devices`` source (reader thread, scaling, conversion to I420, bounded
  queue, pacing), consumed by an asyncio task through ``recv()``;
* **baseline**: the raw library read in a plain thread (``cv2.VideoCapture.read``, a PyAV
  decode, a ``memcpy`` of a ready frame, a sounddevice callback), handed to the same kind of
  consumer with ``loop.call_soon_threadsafe``: no conversion, no queue, no frame type.

Latency is the consumer's receipt time minus the time the read returned (for audio, the
block's first sample); CPU is this process's CPU time over wall time (% of one core). Helper
processes (the MJPEG server, Xvfb, PulseAudio) are not counted. The camera reads a live
MJPEG-over-HTTP stream (``devices.mjpeg_server`` in a subprocess), the screen an Xvfb started
at the measured size, the file an H.264 MP4 written at start-up.

    python -m benchmarks.devices [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from benchmarks._report import Progress, Record, publish
from media._opencv import cv2

ROOT = Path(__file__).resolve().parents[1]
logger = logging.getLogger("benchmarks.devices")


def _load_devices_env() -> None:
    """Use the devices started by ``scripts/devices.sh`` (PulseAudio) unless the caller set its own."""
    env = ROOT / ".devices" / "env"
    if not env.is_file():
        return
    for line in env.read_text(encoding="utf-8").splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export ") :].partition("=")
            parts = shlex.split(value)
            os.environ.setdefault(key.strip(), parts[0] if parts else "")


@dataclass
class Stamped:
    """A baseline read result that carries its own capture time (e.g. x11grab's wall-clock pts)."""

    time: float
    payload: Any


@dataclass
class Run:
    """One measured run."""

    latencies_ms: list[float]
    wall_s: float
    cpu_pct: float

    @property
    def fps(self) -> float:
        return len(self.latencies_ms) / self.wall_s if self.wall_s else 0.0

    @property
    def mean_ms(self) -> float:
        return float(np.mean(self.latencies_ms)) if self.latencies_ms else float("nan")

    @property
    def p95_ms(self) -> float:
        return float(np.percentile(self.latencies_ms, 95)) if self.latencies_ms else float("nan")


def _cpu_seconds() -> float:
    return time.process_time()  # this process, all threads, ns resolution


async def measure_source(source: Any, duration: float, warmup: int) -> Run:
    """Consume a callrt source for ``duration`` s after ``warmup`` frames."""
    await source.start()
    try:
        for _ in range(warmup):
            await source.recv()
        latencies = []
        c0, t0 = _cpu_seconds(), time.perf_counter()
        while time.perf_counter() - t0 < duration:
            frame = await source.recv()
            latencies.append((time.time() - frame.capture_time) * 1000)
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    finally:
        await source.stop()
    return Run(latencies, wall, 100 * cpu / wall)


async def measure_raw(
    open_fn: Callable[[], Any],
    read_fn: Callable[[Any], Any],
    close_fn: Callable[[Any], None],
    duration: float,
    warmup: int,
) -> Run:
    """The baseline: ``read_fn`` in a plain thread, each result handed to the loop as-is.

    The capture time is when ``read_fn`` returned, unless it returns a ``Stamped``.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, Any]] = asyncio.Queue()
    stop = threading.Event()

    def worker() -> None:
        try:
            handle = open_fn()
        except Exception as exc:
            loop.call_soon_threadsafe(queue.put_nowait, (0.0, exc))
            return
        try:
            while not stop.is_set():
                payload = read_fn(handle)
                if isinstance(payload, Stamped):
                    loop.call_soon_threadsafe(queue.put_nowait, (payload.time, payload.payload))
                elif payload is not None:
                    loop.call_soon_threadsafe(queue.put_nowait, (time.time(), payload))
        except Exception as exc:
            loop.call_soon_threadsafe(queue.put_nowait, (0.0, exc))
        finally:
            close_fn(handle)

    async def get() -> float:
        stamp, payload = await asyncio.wait_for(queue.get(), 10)
        if isinstance(payload, Exception):
            raise payload
        return stamp

    thread = threading.Thread(target=worker, name="bench-raw-reader", daemon=True)
    thread.start()
    try:
        for _ in range(warmup):
            await get()
        latencies = []
        c0, t0 = _cpu_seconds(), time.perf_counter()
        while time.perf_counter() - t0 < duration:
            stamp = await get()
            latencies.append((time.time() - stamp) * 1000)
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 10)
    return Run(latencies, wall, 100 * cpu / wall)


class Paced:
    """Sleep until frame ``n`` of a ``fps`` stream is due (the baseline's pacing)."""

    def __init__(self, fps: float) -> None:
        self.fps, self.n, self.t0 = fps, 0, time.monotonic()

    def wait(self) -> None:
        delay = self.t0 + self.n / self.fps - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        self.n += 1


# -- inputs -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def mjpeg_stream(width: int, height: int, fps: float) -> Iterator[str]:
    """A live MJPEG stream served by a separate process (so its CPU is not counted)."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "devices.mjpeg_server", "--size", f"{width}x{height}", "--fps", f"{fps:g}",
         "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the MJPEG server did not start")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/stream.mjpg"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def x_display(width: int, height: int) -> Iterator[str | None]:
    """An Xvfb display of the given size, or ``None`` when Xvfb is not installed."""
    if shutil.which("Xvfb") is None:
        yield None
        return
    n = 150
    while os.path.exists(f"/tmp/.X11-unix/X{n}") or os.path.exists(f"/tmp/.X{n}-lock"):
        n += 1
    display = f":{n}"
    proc = subprocess.Popen(
        ["Xvfb", display, "-screen", "0", f"{width}x{height}x24", "-nolisten", "tcp", "-noreset"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(f"/tmp/.X11-unix/X{n}"):
            if proc.poll() is not None or time.monotonic() > deadline:
                yield None
                return
            time.sleep(0.05)
        if shutil.which("xsetroot"):
            subprocess.run(["xsetroot", "-solid", "#336699"], env={**os.environ, "DISPLAY": display}, check=False)
        yield display
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def write_h264(path: Path, width: int, height: int, fps: int, frames: int) -> Path:
    """An H.264 MP4 of TestPattern frames."""
    from devices import TestPattern

    pattern = TestPattern(width, height, fps)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(pattern.render(i), format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


# -- the benchmark cases ----------------------------------------------------------------


@dataclass
class Case:
    kind: str
    size: tuple[int, int]
    baseline: str
    callrt: Callable[[], Any]
    """Makes the callrt source."""
    raw: Callable[[float, int], Awaitable[Run]]
    """Runs the baseline for ``(duration, warmup)``."""


def raw_thread(
    open_fn: Callable[[], Any], read_fn: Callable[[Any], Any], close_fn: Callable[[Any], None]
) -> Callable[[float, int], Awaitable[Run]]:
    """A baseline that reads in a plain thread (see ``measure_raw``)."""
    return lambda duration, warmup: measure_raw(open_fn, read_fn, close_fn, duration, warmup)


def _av_open(url: str, fmt: str | None, options: dict[str, str] | None = None) -> Any:
    container = av.open(url, format=fmt, options=options or {})
    return container, container.decode(video=0)


def _av_next_looping(state: Any, paced: Paced | None = None) -> Any:
    container, frames = state[0], state[1]
    try:
        frame = next(frames)
    except StopIteration:
        container.seek(0)
        state[1] = frames = container.decode(video=0)
        frame = next(frames)
    if paced is not None:
        paced.wait()
    return frame


def video_cases(size: tuple[int, int], tmp: Path, url: str, display: str | None) -> list[Case]:
    from devices import Camera, ScreenCapture, TestPattern, VideoFile

    w, h = size
    fps = 30
    cases = []
    ready = TestPattern(w, h, fps).render(7)

    def raw_pattern_open() -> Paced:
        return Paced(fps)

    def raw_pattern_read(paced: Paced) -> np.ndarray:
        paced.wait()
        return ready.copy()

    cases.append(
        Case("test pattern", size, "memcpy of a ready I420 frame", lambda: TestPattern(w, h, fps),
             raw_thread(raw_pattern_open, raw_pattern_read, lambda _: None))
    )  # fmt: skip

    path = write_h264(tmp / f"clip-{w}x{h}.mp4", w, h, fps, 60)

    def raw_file_open() -> list[Any]:
        return [*_av_open(str(path), None), Paced(fps)]

    def raw_file_read(state: list[Any]) -> Any:
        return _av_next_looping(state, state[2])

    cases.append(
        Case("file (H.264 mp4)", size, "raw PyAV decode, paced", lambda: VideoFile(path),
             raw_thread(raw_file_open, raw_file_read, lambda s: s[0].close()))
    )  # fmt: skip

    def raw_cam_open() -> cv2.VideoCapture:
        return cv2.VideoCapture(url, cv2.CAP_FFMPEG)

    def raw_cam_read(cap: cv2.VideoCapture) -> Any:
        ok, img = cap.read()
        return img if ok else None

    cases.append(
        Case("camera (OpenCV, MJPEG/HTTP)", size, "raw cv2 read", lambda: Camera(url),
             raw_thread(raw_cam_open, raw_cam_read, lambda cap: cap.release()))
    )  # fmt: skip

    if display is not None:
        opts = {"framerate": str(fps), "draw_mouse": "0"}

        def raw_screen_open() -> list[Any]:
            return list(_av_open(display, "x11grab", opts))

        def raw_screen_read(state: list[Any]) -> Stamped:
            frame = _av_next_looping(state)
            return Stamped(frame.time, frame)  # x11grab stamps frames with the wall clock, as callrt uses

        cases.append(
            Case("screen (x11grab)", size, "raw PyAV x11grab", lambda: ScreenCapture(display, fps=fps),
                 raw_thread(raw_screen_open, raw_screen_read, lambda s: s[0].close()))
        )  # fmt: skip
    return cases


def microphone_case() -> Case | None:
    """The microphone case, or ``None`` (with a log line) when there is no input device."""
    from devices import DeviceError, Microphone, list_devices

    try:
        if not list_devices().microphones:
            logger.warning("skipping the microphone: no input device (run `bash scripts/devices.sh start`)")
            return None
    except DeviceError as exc:
        logger.warning("skipping the microphone: %s", exc)
        return None
    return Case("microphone (PortAudio)", (0, 0), "raw sounddevice callback", lambda: Microphone(), measure_raw_mic)


async def measure_raw_mic(duration: float, warmup: int) -> Run:
    """The microphone baseline: a bare sounddevice callback that copies the block to the loop."""
    import sounddevice as sd

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, np.ndarray]] = asyncio.Queue()

    def callback(indata: np.ndarray, frames: int, t: Any, status: Any) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, (time.time() - frames / 48_000, indata.copy()))

    stream = sd.InputStream(samplerate=48_000, blocksize=960, channels=1, dtype="int16", callback=callback)
    await asyncio.to_thread(stream.start)
    try:
        for _ in range(warmup):
            await asyncio.wait_for(queue.get(), 10)
        latencies = []
        c0, t0 = _cpu_seconds(), time.perf_counter()
        while time.perf_counter() - t0 < duration:
            stamp, _ = await asyncio.wait_for(queue.get(), 10)
            latencies.append((time.time() - stamp) * 1000)
        wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
    finally:
        await asyncio.to_thread(stream.abort)
        await asyncio.to_thread(stream.close)
    return Run(latencies, wall, 100 * cpu / wall)


# -- main -------------------------------------------------------------------------------


async def run_case(case: Case, duration: float, warmup: int) -> list[Record]:
    ours = await measure_source(case.callrt(), duration, warmup)
    raw = await case.raw(duration, warmup)
    res = f"{case.size[0]}x{case.size[1]}" if case.size[0] else "48 kHz mono, 20 ms"
    extra: dict[str, object] = {
        "p95_ms": round(ours.p95_ms, 3),
        "baseline_p95_ms": round(raw.p95_ms, 3),
        "fps": round(ours.fps, 1),
        "baseline_fps": round(raw.fps, 1),
        "frames": len(ours.latencies_ms),
    }
    return [
        Record(f"{case.kind}: capture→recv latency", ours.mean_ms, "ms", res, case.baseline, raw.mean_ms, extra=extra),
        Record(f"{case.kind}: CPU at real rate", ours.cpu_pct, "%cpu", res, case.baseline, raw.cpu_pct,
               extra={"fps": extra["fps"], "baseline_fps": extra["baseline_fps"]}),
    ]  # fmt: skip


async def _bench(quick: bool) -> list[Record]:
    sizes = [(640, 480)] if quick else [(640, 480), (1280, 720)]
    duration, warmup = (0.3, 5) if quick else (3.0, 10)
    records: list[Record] = []
    progress = Progress(total=len(sizes) * 4 + 1, label="devices")
    with tempfile.TemporaryDirectory(prefix="callrt-bench-") as tmp:
        for size in sizes:
            with mjpeg_stream(*size, 30) as url, x_display(*size) as display:
                if display is None:
                    logger.warning("skipping the screen at %dx%d: Xvfb is not installed", *size)
                    progress.step("screen skipped")
                for case in video_cases(size, Path(tmp), url, display):
                    records += await run_case(case, duration, warmup)
                    progress.step(f"{case.kind} {size[0]}x{size[1]}")
        mic = microphone_case()
        if mic is not None:
            records += await run_case(mic, duration * 2 if quick else duration, warmup)
        progress.step("microphone" if mic else "microphone skipped")
    return records


def main(argv: list[str] | None = None) -> int:
    """Run the device benchmark; print a markdown table, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="640x480 only, short runs (a few seconds)")
    parser.add_argument("--json", metavar="PATH", help="also write the records as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    _load_devices_env()
    records = asyncio.run(_bench(args.quick))
    publish(records, "Device sources (callrt vs raw library read, same run)", args.json, None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
