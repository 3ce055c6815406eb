"""A plain TCP responder without the SDK, for pools behind a load balancer.

    GET /PATH HTTP/1.x      answered ``200 OK`` with the body ``<name>`` (the connection closes)
    INC <seq> | GET <seq>   answered ``OK <seq> 0 <name>`` (the probe's counter answer)
    else                    ``ERR unknown request``

One request per connection. It knows nothing of any manager, role or load balancer and runs
until SIGTERM or SIGINT (exit 0) or SIGKILL.

Configuration: ``--name`` (default ``$NFVHA_VNFC``, else the host name) and ``--address``
``HOST:PORT`` (default ``$NFVHA_SERVICE_ADDRESS``: behind a load balancer, the VNFC's own
backend address). ``ready`` is printed on stdout once it listens. Run it as
``python -m nfvha.examples.web``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys


def answer(first: bytes, name: bytes) -> bytes:
    parts = first.split()
    if len(parts) == 3 and parts[2].startswith(b"HTTP/"):
        body = name + b"\n"
        head = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
        return head + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    if len(parts) == 2 and parts[0] in (b"GET", b"INC") and parts[1].isdigit():
        return b"OK %s 0 %s\n" % (parts[1], name)
    return b"ERR unknown request\n"


async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: bytes) -> None:
    try:
        first = await asyncio.wait_for(reader.readline(), 5.0)
        if first.split()[2:3] and first.split()[2].startswith(b"HTTP/"):
            # The headers, up to the blank line: nothing in them changes the answer.
            while await asyncio.wait_for(reader.readline(), 5.0) not in (b"\r\n", b"\n", b""):
                pass
        writer.write(answer(first, name))
        await writer.drain()
    except (OSError, TimeoutError, ValueError):
        pass  # the consumer went away or sent too much: nothing to answer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def main_async(address: str, name: str) -> None:
    host, _, port = address.rpartition(":")
    label = name.encode()
    server = await asyncio.start_server(
        lambda r, w: serve(r, w, label), host, int(port), family=socket.AF_INET, reuse_address=True
    )
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", default=os.environ.get("NFVHA_VNFC") or socket.gethostname())
    parser.add_argument("--address", default=os.environ.get("NFVHA_SERVICE_ADDRESS"))
    args = parser.parse_args(argv)
    host, _, port = (args.address or "").rpartition(":")
    if not host or not port.isdigit():
        parser.error("--address HOST:PORT (or NFVHA_SERVICE_ADDRESS) is required")
    if not args.name or any(c.isspace() for c in args.name):
        parser.error(f"--name must be one word, got {args.name!r}")
    try:
        asyncio.run(main_async(args.address, args.name))
    except OSError as exc:
        print(f"web: cannot listen on {args.address}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
