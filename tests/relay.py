"""A loopback TCP relay for tests that must see every byte a party sends (Flower's SuperLink, the model server)."""

from __future__ import annotations

import socket
import threading


class Relay:
    """Relays 127.0.0.1:<port> to 127.0.0.1:<target> and keeps every byte: `up` toward the target, `down` back."""

    def __init__(self, target: int) -> None:
        self.target, self.up, self.down = target, bytearray(), bytearray()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.lock, self.conns = threading.Lock(), []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:  # the target is already gone (the test is stopping): drop the retry
                client.close()
                continue
            self.conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, self.up), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, self.down), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, seen: bytearray) -> None:
        try:
            while data := src.recv(1 << 16):
                with self.lock:
                    seen += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        """Stop accepting and close every relayed connection."""
        self.server.close()
        for s in self.conns:
            s.close()
