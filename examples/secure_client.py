"""``wss://`` with a private certificate authority.

Pass an ``ssl.SSLContext`` that trusts your CA; the client builds nothing per
reconnect and reuses that one context. A certificate that is not trusted is a
``CertificateError`` at once: retrying cannot fix it.

Run without arguments, the example makes a throwaway CA and server
certificate with ``trustme`` (``pip install trustme``; it is in wsclient's
``test`` extras), serves ``wss://`` on loopback, shows that the default
context refuses it, and that a context trusting the CA works across a drop.

    python examples/secure_client.py
    python examples/secure_client.py --url wss://internal.example:8443/feed --ca internal-ca.pem
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import ssl
import sys

import structlog

import wsclient
from wsclient.testing import FlakyServer

FAST = wsclient.Backoff(initial=0.05, maximum=0.5)


async def talk(url: str, context: ssl.SSLContext | None) -> str:
    """Send one message on a fresh client and return the first message received."""
    async with wsclient.Client(url, ssl=context, backoff=FAST, max_attempts=5) as client:
        await client.send("hello over TLS")
        async with asyncio.timeout(5):
            reply = await client.recv()
    return reply if isinstance(reply, str) else reply.decode()


async def embedded() -> int:
    import trustme  # only the embedded demo needs it

    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)

    async with FlakyServer("echo", ssl=server_context) as server:
        try:
            await talk(server.url, None)
        except wsclient.CertificateError as exc:
            print(f"default context: {exc}")
        else:
            print("FAILED: an untrusted certificate was accepted")
            return 1
        async with wsclient.Client(server.url, ssl=client_context, backoff=FAST) as client:
            await client.send("before the drop")
            first = await client.recv()
            server.drop()
            await server.wait_for_connections(2)  # the client noticed and opened a new TLS session
            await client.wait_open(timeout=5)
            await client.send("after the drop")
            second = await client.recv()
        print(f"context trusting the CA: {first!r}, then {second!r} after a drop; sessions {client.stats.sessions}")
    ok = (first, second) == ("before the drop", "after the drop") and client.stats.sessions == 2
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


async def main(url: str | None, ca: str | None) -> int:
    if url is None:
        return await embedded()
    context = ssl.create_default_context(cafile=ca) if ca else None
    try:
        print(await talk(url, context))
    except wsclient.FatalError as exc:
        print(f"fatal: {exc}")
        return 3
    return 0


if __name__ == "__main__":
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
    )
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a wss:// server that echoes (default: an embedded one)")
    parser.add_argument("--ca", help="PEM file of the CA that signed the server's certificate")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.url, args.ca)))
