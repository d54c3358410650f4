"""The API client that jobs share, and its replacement by a reload.

A reload that changes the API settings makes a new client for the jobs that start after it;
jobs already running keep theirs (a job keeps the settings it started with). A client that is
no longer current is closed when its last job ends, so reloads leave nothing behind.
"""

from __future__ import annotations

import threading

from mimo_watchd.client import MimoClient


class Clients:
    """The API client new jobs get; one replaced by a reload is closed when its last job ends."""

    def __init__(self, client: MimoClient) -> None:
        self.current = client
        self._lock = threading.Lock()
        self._users: dict[MimoClient, int] = {}
        self._retired: set[MimoClient] = set()

    def acquire(self) -> MimoClient:
        """The current client, for a job starting now (give it back with ``release``)."""
        with self._lock:
            self._users[self.current] = self._users.get(self.current, 0) + 1
            return self.current

    def release(self, client: MimoClient) -> None:
        """A job using ``client`` ended; a replaced client with no job left is closed."""
        with self._lock:
            self._users[client] -= 1
            if self._users[client]:
                return
            del self._users[client]
            if client not in self._retired:
                return
            self._retired.discard(client)
        client.close()

    def replace(self, client: MimoClient) -> None:
        """Makes ``client`` current; the old one is closed now or when its last job ends."""
        with self._lock:
            old, self.current = self.current, client
            in_use = old in self._users
            if in_use:
                self._retired.add(old)
        if not in_use:
            old.close()

    def close(self) -> None:
        """Closes every client (their requests in flight fail as the client stops)."""
        with self._lock:
            clients = {self.current, *self._retired}
            self._retired.clear()
        for client in clients:
            client.close()
