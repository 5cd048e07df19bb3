"""``MJPEGServer``: a live MJPEG-over-HTTP stream of ``TestPattern`` frames (a stand-in IP camera).

Machines without ``/dev/video*`` still exercise the real OpenCV camera path with it:
``Camera(server.url)``. Each client gets its own stream starting at frame 0, paced at
``fps``, with the frame index encoded in the pixels (``read_frame_index``). The server
counts connections opened and closed, so tests can prove a camera released its stream, and
can ``stall()`` or ``drop_clients()`` to make a camera disappear mid-capture.

Run standalone: ``python -m devices.mjpeg_server --size 640x480 --fps 30 --port 8090``.
"""

from __future__ import annotations

import argparse
import logging
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from devices.pattern import TestPattern
from media._opencv import cv2

logger = logging.getLogger("devices")

_BOUNDARY = "callrtframe"


class MJPEGServer:
    """A threaded HTTP server streaming numbered JPEG frames as ``multipart/x-mixed-replace``."""

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        fps: float = 30.0,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        quality: int = 90,
    ) -> None:
        self.width, self.height, self.fps, self.quality = width, height, fps, quality
        self._host, self._port = host, port
        self._pattern = TestPattern(width, height, fps)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Condition()
        self._clients: set[socket.socket] = set()
        self.connections_opened = 0
        """Stream connections accepted so far."""
        self.connections_closed = 0
        """Stream connections that ended (client closed, dropped, or server stopped)."""
        self.frames_sent = 0
        self._stalled = threading.Event()
        self._stopping = threading.Event()

    @property
    def url(self) -> str:
        """``http://host:port/stream.mjpg`` (valid after ``start()``)."""
        if self._httpd is None:
            raise RuntimeError("MJPEGServer is not started")
        host, port = self._httpd.socket.getsockname()[:2]
        return f"http://{host}:{port}/stream.mjpg"

    @property
    def active_connections(self) -> int:
        with self._lock:
            return len(self._clients)

    def start(self) -> MJPEGServer:
        """Bind and serve in a background thread."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                logger.debug("mjpeg: " + format, *args)

            def do_GET(self) -> None:
                if self.path.split("?")[0] not in ("/", "/stream.mjpg"):
                    self.send_error(404)
                    return
                server._stream(self)

        self._httpd = ThreadingHTTPServer((self._host, self._port), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="callrt-mjpeg-server", daemon=True)
        self._thread.start()
        logger.info("MJPEG test stream at %s", self.url)
        return self

    def _stream(self, handler: BaseHTTPRequestHandler) -> None:
        conn = handler.connection
        with self._lock:
            self._clients.add(conn)
            self.connections_opened += 1
            self._lock.notify_all()
        try:
            handler.send_response(200)
            handler.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={_BOUNDARY}")
            handler.send_header("Cache-Control", "no-cache")
            handler.end_headers()
            t0 = time.monotonic()
            index = 0
            while not self._stopping.is_set():
                if self._stalled.is_set():
                    if _peer_closed(conn, 0.02):
                        break
                    t0 = time.monotonic() - index / self.fps
                    continue
                bgr = cv2.cvtColor(self._pattern.render(index), cv2.COLOR_YUV2BGR_I420)
                ok, jpg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
                if not ok:
                    raise RuntimeError("JPEG encoding failed")
                head = f"--{_BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpg)}\r\n\r\n"
                handler.wfile.write(head.encode() + jpg.tobytes() + b"\r\n")
                handler.wfile.flush()
                self.frames_sent += 1
                index += 1
                delay = t0 + index / self.fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        except (BrokenPipeError, ConnectionResetError, OSError) as exc:
            logger.debug("mjpeg: client went away: %r", exc)
        finally:
            with self._lock:
                self._clients.discard(conn)
                self.connections_closed += 1
                self._lock.notify_all()

    def wait_for_connections(
        self, *, opened: int | None = None, closed: int | None = None, timeout: float = 5.0
    ) -> bool:
        """Block until at least ``opened`` connections were accepted / ``closed`` have ended."""
        with self._lock:
            return self._lock.wait_for(
                lambda: (
                    (opened is None or self.connections_opened >= opened)
                    and (closed is None or self.connections_closed >= closed)
                ),
                timeout,
            )

    def stall(self, stalled: bool = True) -> None:
        """Keep connections open but stop sending frames (a camera that hangs)."""
        if stalled:
            self._stalled.set()
        else:
            self._stalled.clear()

    def drop_clients(self) -> None:
        """Close every client connection (a camera that disappears)."""
        with self._lock:
            clients = list(self._clients)
        for conn in clients:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError as exc:
                logger.debug("mjpeg: shutdown of a client failed: %r", exc)

    def stop(self) -> None:
        """Stop serving and close every connection."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        self.drop_clients()
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> MJPEGServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _peer_closed(conn: socket.socket, timeout: float) -> bool:
    """Wait up to ``timeout`` for the client to close its end (anything else it sends is discarded)."""
    readable, _, _ = select.select([conn], [], [], timeout)
    if not readable:
        return False
    try:
        return conn.recv(4096) == b""
    except OSError:
        return True


def main(argv: list[str] | None = None) -> int:
    """Serve a test stream until interrupted."""
    parser = argparse.ArgumentParser(description="Serve a numbered MJPEG-over-HTTP test stream.")
    parser.add_argument("--size", default="640x480", help="WxH (default 640x480)")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    server = MJPEGServer(w, h, args.fps, host=args.host, port=args.port).start()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
