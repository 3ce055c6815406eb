"""A daemon that detaches as classic ones do (dnsmasq without --no-daemon): fork, setsid, fork
again. The server runs in a session and process group of its own, outside the group of the
process nfvha started; that one stays (waiting) so that nfvha has a main process to watch.

    python detaching_daemon.py HOST:PORT PIDFILE

The port is bound before detaching, so that a port still held (by an earlier server that was
not isolated) is the exit of the started process. The server answers every UDP datagram with
``OK <its pid>`` and writes its pid to PIDFILE (atomically).
"""

from __future__ import annotations

import os
import signal
import socket
import sys


def serve(sock: socket.socket, pidfile: str) -> None:
    tmp = f"{pidfile}.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.replace(tmp, pidfile)
    while True:
        _, peer = sock.recvfrom(2048)
        sock.sendto(f"OK {os.getpid()}".encode(), peer)


def main() -> None:
    address, pidfile = sys.argv[1], sys.argv[2]
    host, _, port = address.rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, int(port)))
    if os.fork() == 0:
        os.setsid()  # leaves the process group (and session) nfvha knows
        if os.fork() == 0:
            serve(sock, pidfile)
        os._exit(0)
    sock.close()
    os.wait()  # the middle process: gone at once, the server is reparented
    while True:
        signal.pause()


if __name__ == "__main__":
    main()
