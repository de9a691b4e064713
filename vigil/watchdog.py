"""Tells systemd (Type=notify) that Vigil is ready and that each cycle completed, over $NOTIFY_SOCKET."""
import os
import socket


class Notifier:
    """A no-op without NOTIFY_SOCKET, so the same code runs under systemd, cron or a terminal."""

    def __init__(self, address=None):
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract socket namespace
        self.address = address

    def send(self, message):
        if not self.address:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            try:
                s.sendto(message.encode(), self.address)
            except OSError:
                return False  # systemd gone: nothing to tell, and trading must not stop for it
        return True

    def ready(self):
        self.send("READY=1")

    def cycle(self, rec):
        """Called after every recorded cycle: a loop that hangs stops these pings and systemd restarts it."""
        self.send(f"WATCHDOG=1\nSTATUS=cycle {rec['n']} equity {rec['equity']:.2f}"
                  f"{' HALTED' if rec['halted'] else ''}")

    def stopping(self):
        self.send("STOPPING=1")
