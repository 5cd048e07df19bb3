"""OpenCV for every callrt module, imported with its worker threads told not to spin-wait.

OpenCV's thread pool (``cv2.cvtColor`` and ``cv2.resize`` split a frame over all CPUs) keeps its
worker threads busy-waiting for the next job after each call. For a pipeline that converts one
frame every 33 ms that wait is pure cost: measured on a 2-core VM, BGR->I420 at 640x480 took
0.93 ms of CPU per paced frame with the default pool against 0.30 ms with one thread (1.2 ms
against 0.47 at 1280x720), and it showed up in the end-to-end benchmark as a thread of its own
burning 0.6 ms per frame. With the active waits set to 0 the workers sleep between jobs: the
same conversion cost 0.37 ms of CPU (0.62 ms at 720p) and kept its parallel wall time.

OpenCV reads these settings once, when the library loads, so they are set here before the one
``import cv2`` every callrt module goes through (``from media._opencv import cv2``). A value
already in the environment wins; a program that imported cv2 before callrt keeps its pool as
it was.
"""

from __future__ import annotations

import os

NO_SPIN = {
    "OPENCV_THREAD_POOL_ACTIVE_WAIT_WORKER": "0",
    "OPENCV_THREAD_POOL_ACTIVE_WAIT_MAIN": "0",
}
"""Environment defaults applied before OpenCV loads (iterations each thread spins before sleeping)."""

for _name, _value in NO_SPIN.items():
    os.environ.setdefault(_name, _value)

import cv2  # noqa: E402  (after the environment above, on purpose)

__all__ = ["NO_SPIN", "cv2"]
