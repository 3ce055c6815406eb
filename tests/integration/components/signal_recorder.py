"""A UDP service that records the signal it was stopped with.

    python signal_recorder.py HOST:PORT OUTFILE

Answers every datagram with ``OK``; on SIGTERM or SIGINT writes the signal's name to OUTFILE
and exits 0, so a test can tell which one the graceful stop sent.
"""

from __future__ import annotations

import signal
import socket
import sys


def main() -> None:
    address, outfile = sys.argv[1], sys.argv[2]
    host, _, port = address.rpartition(":")

    def stopped(signum: int, _frame: object) -> None:
        with open(outfile, "w") as f:
            f.write(signal.Signals(signum).name)
        sys.exit(0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stopped)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, int(port)))
    while True:
        _, peer = sock.recvfrom(2048)
        sock.sendto(b"OK", peer)


if __name__ == "__main__":
    main()
