"""Small HTTP servers for tests: a fixture exposition in Prometheus' text format (0.0.4) for the
real Prometheus to scrape, or any handler a test writes (a broken answer)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def exposition(render: Callable[[], list[str]]) -> type[BaseHTTPRequestHandler]:
    """A handler answering every GET with ``render()``'s lines as a text exposition."""

    class _Exposition(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = ("\n".join(render()) + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return _Exposition


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` on 127.0.0.1 at a free port, in a thread; yields ``host:port``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
