"""A TCP forwarder in front of the moto S3 server that can make the object store stop answering.

Tests point a client at the proxy; when a request matches the trigger (e.g. the upload of a
checkpoint file), the proxy goes down: that request and every open connection are cut, new
connections are closed unanswered, until ``recover()``.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable


class OutageProxy:
    """127.0.0.1:<port> -> upstream, with a request-triggered outage."""

    def __init__(self, upstream: tuple[str, int], trigger: Callable[[bytes], bool]) -> None:
        self.upstream, self.trigger = upstream, trigger
        self.down, self.triggered = threading.Event(), threading.Event()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def recover(self) -> None:
        self.down.clear()

    def close(self) -> None:
        self._server.close()
        self._cut_all()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if self.down.is_set():
                client.close()
                continue
            upstream = socket.create_connection(self.upstream)
            with self._lock:
                self._open.update((client, upstream))
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, from_client: bool) -> None:
        try:
            while chunk := src.recv(65536):
                if from_client and not self.down.is_set() and self.trigger(chunk):
                    self.down.set()
                    self.triggered.set()
                if self.down.is_set():
                    break
                dst.sendall(chunk)
        except OSError:
            pass
        if self.down.is_set():
            self._cut_all()
        else:
            for s in (src, dst):
                self._close(s)

    def _close(self, s: socket.socket) -> None:
        with self._lock:
            self._open.discard(s)
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

    def _cut_all(self) -> None:
        with self._lock:
            sockets = list(self._open)
        for s in sockets:
            self._close(s)
