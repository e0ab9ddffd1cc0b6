"""The instrumentation-cost benchmark's contenders, at a tiny scale: every message counted, instrumented or not."""

from __future__ import annotations

import pytest
from websockets.frames import Frame, Opcode

from benchmarks.run import meter_provider, recv_wsclient_otel, send_wsclient_otel, server_process


@pytest.mark.parametrize("transport", ["websockets", "picows"], indirect=True)
async def test_instrumented_and_plain_contenders_count_every_message(transport: str) -> None:
    provider = meter_provider(0.01)
    assert provider is not None
    try:
        async with server_process("blast") as (blast, _), server_process("sink") as (sink, _):
            for used in (None, provider):
                assert await recv_wsclient_otel(f"ws://127.0.0.1:{blast}/64/500", transport, used) == 500  # type: ignore[arg-type]
                frame = len(Frame(Opcode.TEXT, b"x" * 64).serialize(mask=True))
                await send_wsclient_otel(f"ws://127.0.0.1:{sink}/{frame}/500", "x" * 64, 500, transport, used)  # type: ignore[arg-type]
    finally:
        provider.shutdown()
