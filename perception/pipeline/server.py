"""A small HTTP server (``http.server`` in a thread) showing the live output.

Endpoints (bound to 127.0.0.1 only):

- ``/``            an HTML page with the MJPEG stream and a stats table (polls ``/stats.json``);
- ``/stream.mjpg`` ``multipart/x-mixed-replace`` MJPEG stream of the rendered frames;
- ``/frame.jpg``   the latest frame as one JPEG;
- ``/stats.json``  frames, fps, per-stage latency, dropped frames, errors.

Frames are JPEG-encoded once per update, not once per client.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import cv2
import numpy as np

log = logging.getLogger(__name__)

__all__ = ["MJPEGServer"]

BOUNDARY = "perceptionframe"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>perception live</title>
<style>
body{background:#111;color:#ddd;font-family:system-ui,sans-serif;margin:16px}
h1{font-size:18px;margin:0 0 8px} img{max-width:100%;border:1px solid #333}
table{border-collapse:collapse;margin-top:8px;font-size:13px} td{padding:2px 10px;border-bottom:1px solid #333}
td.v{text-align:right;font-variant-numeric:tabular-nums}
</style></head>
<body><h1>perception &mdash; live</h1>
<img id="stream" src="/stream.mjpg" alt="live stream">
<table id="stats"><tr><td>waiting for stats&hellip;</td></tr></table>
<script>
async function poll(){
  try{
    const s = await (await fetch('/stats.json',{cache:'no-store'})).json();
    let rows = `<tr><td>frames</td><td class=v>${s.frames??0}</td></tr><tr><td>fps</td><td class=v>${(s.fps??0).toFixed(1)}</td></tr>`;
    for (const [k,v] of Object.entries(s.latency_ms||{})) rows += `<tr><td>${k} ms</td><td class=v>${v.toFixed(1)}</td></tr>`;
    rows += `<tr><td>dropped frames</td><td class=v>${s.dropped_frames??0}</td></tr>`;
    for (const [k,v] of Object.entries(s.errors||{})) rows += `<tr><td>errors: ${k}</td><td class=v>${v}</td></tr>`;
    if (s.finished) rows += `<tr><td colspan=2>run finished</td></tr>`;
    document.getElementById('stats').innerHTML = rows;
  }catch(e){}
  setTimeout(poll, 1000);
}
poll();
</script></body></html>
"""


IDLE_TIMEOUT_S = 30.0   # a connection that sends no request for this long is closed
LISTEN_BACKLOG = 64


class MJPEGServer:
    """Serve the latest rendered frame as MJPEG plus JSON stats on ``127.0.0.1:port``
    (``port=0`` picks a free port; see :attr:`port`)."""

    def __init__(self, port: int = 8080, host: str = "127.0.0.1", quality: int = 80) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the preview server only binds to localhost")
        self.quality = quality
        self._jpeg: bytes | None = None
        self._seq = 0
        self._stats: dict[str, Any] = {}
        self._cond = threading.Condition()
        self._closed = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = IDLE_TIMEOUT_S  # an idle keep-alive connection gives its thread back

            def handle(self) -> None:
                try:
                    super().handle()
                except (BrokenPipeError, ConnectionResetError, TimeoutError):
                    pass  # the client left: nothing to report

            def _host_ok(self) -> bool:
                """DNS rebinding: a page on another site that resolves its name to 127.0.0.1 sends its
                own Host header; only our own names pass (on any port)."""
                host = (self.headers.get("Host") or "").strip().lower()
                name = host if host.endswith("]") else host.rsplit(":", 1)[0]
                return name in ("127.0.0.1", "localhost", "[::1]")

            def log_message(self, fmt: str, *args: Any) -> None:
                log.debug("http: " + fmt, *args)

            def _send(self, code: int, ctype: str, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                if not self._host_ok():
                    self._send(421, "text/plain", b"misdirected request: wrong Host header\n")
                    return
                path = self.path.split("?", 1)[0]
                if path in ("/", "/index.html"):
                    self._send(200, "text/html; charset=utf-8", PAGE.encode())
                elif path == "/stats.json":
                    with server._cond:
                        body = json.dumps(server._stats).encode()
                    self._send(200, "application/json", body)
                elif path == "/frame.jpg":
                    with server._cond:
                        jpg = server._jpeg
                    if jpg is None:
                        self._send(503, "text/plain", b"no frame yet\n")
                    else:
                        self._send(200, "image/jpeg", jpg)
                elif path == "/stream.mjpg":
                    self._stream()
                else:
                    self._send(404, "text/plain", b"not found\n")

            def _stream(self) -> None:
                self.close_connection = True
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Connection", "close")
                self.end_headers()
                last = -1
                try:
                    while True:
                        with server._cond:
                            server._cond.wait_for(lambda: server._seq != last or server._closed, timeout=1.0)
                            if server._closed:
                                return
                            if server._seq == last or server._jpeg is None:
                                continue
                            jpg, last = server._jpeg, server._seq
                        self.wfile.write(f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                                         f"Content-Length: {len(jpg)}\r\n\r\n".encode())
                        self.wfile.write(jpg)
                        self.wfile.write(b"\r\n")
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError, TimeoutError):
                    return

        class Server(ThreadingHTTPServer):
            request_queue_size = LISTEN_BACKLOG  # the default of 5 refuses bursts of clients

        try:
            self.httpd = Server((host, port), Handler)
        except OSError as exc:  # most often: the port is in use
            raise OSError(f"--serve {port}: cannot listen on {host}:{port} ({exc.strerror or exc}); "
                          "choose another port") from None
        self.httpd.daemon_threads = True
        self.host, self.port = host, int(self.httpd.server_address[1])
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="mjpeg-server", daemon=True)
        self._thread.start()
        log.info("serving on http://%s:%d/", host, self.port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def update(self, image_bgr: np.ndarray | None, stats: dict[str, Any] | None = None) -> None:
        jpg = None
        if image_bgr is not None:
            ok, buf = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            jpg = buf.tobytes() if ok else None
        with self._cond:
            if jpg is not None:
                self._jpeg = jpg
                self._seq += 1
            if stats is not None:
                self._stats = stats
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(2.0)
