"""A TCP proxy whose client side can be cut while the server side stays open (a half-open
connection, as when a phone loses its network): the server notices nothing until it writes."""

from __future__ import annotations

import contextlib
import socket
import threading


class CutProxy:
    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self._cut = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            with self._lock:
                self.pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, to_client: bool) -> None:
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            if to_client and self._cut.is_set():
                continue  # black hole: the server's writes go nowhere, its socket stays open
            try:
                dst.sendall(data)
            except OSError:
                break
        if not to_client:
            return  # client side gone: keep the server side open (half-open)

    def cut(self) -> None:
        """Close every client-side socket; the server-side sockets stay open."""
        self._cut.set()
        with self._lock:
            for client, _ in self.pairs:
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    client.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.close()
        with self._lock:
            for client, upstream in self.pairs:
                for s in (client, upstream):
                    with contextlib.suppress(OSError):
                        s.close()
