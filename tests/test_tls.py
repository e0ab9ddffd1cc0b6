"""TLS: ``wss://`` verifies certificates by default, a private CA is trusted only when the user says so."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trustme
from helpers import MS, fast, until
from structlog.testing import capture_logs

import wsclient
from wsclient.testing import FaultProxy, FlakyServer

BOUND = 5.0
SECRETS = ("pa55word", "t0ken", "s3cret")


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def server_context(ca: trustme.CA, host: str = "127.0.0.1") -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert(host).configure_cert(context)
    return context


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
async def secure(ca: trustme.CA) -> AsyncIterator[FlakyServer]:
    """An echo server on ``wss://127.0.0.1`` with a certificate from a private CA."""
    async with FlakyServer(ssl=server_context(ca)) as server:
        yield server


async def test_self_signed_server_is_refused_by_default(secure: FlakyServer) -> None:
    async with asyncio.timeout(BOUND):
        client = wsclient.Client(secure.url, **fast())
        with pytest.raises(wsclient.CertificateError, match="not trusted") as caught:
            async with client:
                pass
    assert isinstance(caught.value, wsclient.FatalError)
    assert "unable to get local issuer certificate" in str(caught.value)
    assert isinstance(caught.value.__cause__, ssl.SSLCertVerificationError)
    # Fatal at once: no reconnect loop against a server that will never be trusted.
    assert client.stats.connect_attempts == 1
    assert secure.accepted == 0


async def test_private_ca_trusted_through_the_ssl_argument(secure: FlakyServer, ca: trustme.CA) -> None:
    async with asyncio.timeout(BOUND), wsclient.Client(secure.url, ssl=trusting(ca), **fast()) as client:
        await client.send("over tls")
        assert await client.recv() == "over tls"
        assert client.session is not None
        assert client.session.connection.transport.get_extra_info("ssl_object") is not None


async def test_certificate_for_another_host_is_refused(ca: trustme.CA) -> None:
    async with FlakyServer(ssl=server_context(ca, "example.org")) as server:
        async with asyncio.timeout(BOUND):
            with pytest.raises(wsclient.CertificateError, match=r"mismatch, certificate is not valid for '127\.0"):
                async with wsclient.Client(server.url, ssl=trusting(ca), **fast()):
                    pass
        assert server.accepted == 0


async def test_one_default_context_serves_every_reconnect(
    secure: FlakyServer, ca: trustme.CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The default context trusts the system store; point the store at the private CA for this test.
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    contexts: list[ssl.SSLContext] = []

    async def remember(session: wsclient.Session) -> None:
        contexts.append(session.connection.transport.get_extra_info("ssl_object").context)

    async with asyncio.timeout(BOUND), wsclient.Client(secure.url, on_connect=remember, **fast()) as client:
        for sessions in (2, 3):
            await client.wait_open(timeout=BOUND)
            secure.drop()
            await until(lambda: client.stats.sessions == sessions)  # noqa: B023 - awaited in this iteration
        await client.send("still verified")
        assert await client.recv() == "still verified"
    # A new SSLContext per reconnect leaks memory: the client builds one and reuses it.
    assert len(contexts) == 3
    assert all(context is contexts[0] for context in contexts)
    assert contexts[0].verify_mode is ssl.CERT_REQUIRED
    assert contexts[0].check_hostname


async def test_tls_through_a_faulty_network_recovers(secure: FlakyServer, ca: trustme.CA) -> None:
    heartbeat = wsclient.Heartbeat(interval=10 * MS, timeout=40 * MS)
    async with FaultProxy(secure.port) as proxy:
        url = f"wss://127.0.0.1:{proxy.port}"
        async with (
            asyncio.timeout(BOUND),
            wsclient.Client(url, ssl=trusting(ca), **fast(heartbeat=heartbeat)) as client,
        ):
            await client.wait_open(timeout=BOUND)
            proxy.slice_size = 3  # the TLS records arrive in tiny pieces
            await client.send("sliced")
            assert await client.recv() == "sliced"
            proxy.slice_size = 0
            # A reset in the middle of the next TLS handshake, then a plain reset of the session.
            proxy.cut_after = 200
            proxy.reset()
            await proxy.wait_for_connections(2)
            proxy.cut_after = None
            await until(lambda: client.stats.sessions >= 2)
            proxy.blackhole()
            await until(lambda: client.stats.outages_total >= 2)
            proxy.restore()
            await client.send("recovered")
            assert await client.recv() == "recovered"
    causes = [outage.cause for outage in client.stats.outages]
    assert "heartbeat_timeout" in causes


async def test_tls_failures_never_log_secrets(secure: FlakyServer, ca: trustme.CA) -> None:
    url = f"wss://bot:pa55word@127.0.0.1:{secure.port}/feed?token=t0ken"
    with capture_logs() as events:
        async with asyncio.timeout(BOUND):
            with pytest.raises(wsclient.CertificateError) as caught:
                async with wsclient.Client(url, headers={"Cookie": "Bearer s3cret"}, **fast()):
                    pass
            secure.drop()
            client = wsclient.Client(url, ssl=trusting(ca), headers={"Cookie": "Bearer s3cret"}, **fast())
            async with client:
                await client.wait_open(timeout=BOUND)
                secure.drop()
                await until(lambda: client.stats.sessions == 2)
    assert {"fatal", "connected", "disconnected"} <= {e["event"] for e in events}
    dump = repr(events) + str(caught.value)
    for secret in SECRETS:
        assert secret not in dump
