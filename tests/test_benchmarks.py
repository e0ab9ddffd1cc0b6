"""The benchmark harness itself: its servers, its wsclient contenders and its report, at a tiny scale.

Figures are not asserted here (performance lives in ``python -m benchmarks.run``);
what is asserted is that every message is counted and the report says what it measured.
"""

from __future__ import annotations

import dataclasses
import importlib.util

from websockets.frames import Frame, Opcode

import wsclient
from benchmarks.run import (
    ECHOERS,
    QUICK,
    REQUESTERS,
    Row,
    cost,
    interleaved_requests,
    markdown,
    recv_websockets,
    recv_websockets_sync,
    recv_wsclient,
    recv_wsclient_handler,
    recv_wsclient_sync,
    send_websockets,
    send_wsclient,
    server_process,
    simulated_recovery,
    summarise,
    websockets_delays,
    wsclient_delays,
)
from benchmarks.scale import KINDS, METRICS, PER_ADDRESS, addresses, scale


async def test_blast_server_delivers_every_frame_to_each_receiver() -> None:
    async with server_process("blast") as (port, _):
        url = f"ws://127.0.0.1:{port}/64/1500"
        assert await recv_websockets(url) == 1500
        assert await recv_wsclient(url) == 1500
        assert await recv_wsclient_handler(url) == 1500
        assert await recv_websockets_sync(url) == 1500
        assert await recv_wsclient_sync(url) == 1500


async def test_every_echo_contender_times_each_round_trip() -> None:
    async with server_process("echo") as (port, _):
        for name, echo, module in ECHOERS:
            if module and importlib.util.find_spec(module) is None:
                continue  # a peer from the bench extra, which the tests do not need
            times = await echo(f"ws://127.0.0.1:{port}/", 50)
            assert len(times) == 50, name
            assert all(t > 0 for t in times), name


async def test_every_requester_times_each_round_trip_taking_turns() -> None:
    async with server_process("echo") as (port, _):
        times = await interleaved_requests(f"ws://127.0.0.1:{port}/", 50)
    assert sorted(times) == sorted(name for name, _ in REQUESTERS)
    for name, taken in times.items():
        assert len(taken) == 50, name
        assert all(t > 0 for t in taken), name


async def test_sink_server_answers_once_every_byte_arrived() -> None:
    payload = "x" * 100
    frame_bytes = len(Frame(Opcode.TEXT, payload.encode()).serialize(mask=True))
    async with server_process("sink") as (port, _):
        url = f"ws://127.0.0.1:{port}/{frame_bytes}/700"
        # Each sender asserts that the sink answered "done", which it does only after 700 whole frames.
        await send_websockets(url, payload, 700)
        await send_wsclient(url, payload, 700)


def test_report_gives_medians_and_ratios_to_the_reference() -> None:
    rows = [
        Row("receive 64 B", "reference peer", "messages/s", "msg/s", runs=[100.0, 300.0, 200.0], reference=True),
        Row("receive 64 B", "contender", "messages/s", "msg/s", runs=[190.0, 150.0, 170.0]),
        cost("recovery", "slow", "to first message", "s", reference=True),
        Row("receive 64 B", "absent peer", "messages/s", "msg/s", note="skipped: absent not installed"),
    ]
    rows[2].runs = [2.0]
    summarise(rows)
    assert rows[0].median == 200.0
    assert rows[1].median == 170.0
    assert rows[1].ratio == 0.85
    assert rows[2].higher_is_better is False
    assert rows[3].median is None
    table = markdown(rows).splitlines()
    assert table[0] == "| scenario | contender | metric | median | ratio | runs |"
    assert table[2] == "| receive 64 B | reference peer | messages/s | 200.0 msg/s | reference | 3 |"
    assert table[3] == "| receive 64 B | contender | messages/s | 170.0 msg/s | 0.85x | 3 |"
    assert table[5] == "| receive 64 B | absent peer | messages/s | skipped: absent not installed | - | 0 |"


def test_simulated_recovery_counts_from_the_end_of_the_outage() -> None:
    late, attempts = simulated_recovery(lambda: iter([0.0, 0.4, 0.4, 0.4, 0.4]), outage=1.0, runs=3)
    assert round(late, 6) == 0.2
    assert attempts == 4


def test_simulated_delays_come_from_each_library() -> None:
    fixed = list(zip(range(4), wsclient_delays(wsclient.Backoff(jitter=False)), strict=False))
    assert [delay for _, delay in fixed] == [0.5, 1.0, 2.0, 4.0]
    first, second, third = (delay for _, delay in zip(range(3), websockets_delays(), strict=False))
    assert first == 0.0
    assert 0.0 <= second <= 5.0
    assert third == 3.1


async def test_the_idle_scenario_measures_each_library_against_its_raw_peer() -> None:
    from dataclasses import replace

    from benchmarks.run import QUICK, idle_connections

    rows = await idle_connections(replace(QUICK, idle_clients=3, idle_seconds=0.05, repeats=2))
    references = {row.scenario: row.contender for row in rows if row.reference}
    expected = {"3 idle connections": "websockets"}
    if importlib.util.find_spec("picows") is not None:
        expected["3 idle connections on picows"] = "picows"
    assert references == expected
    contenders = {row.contender for row in rows}
    assert "wsclient" in contenders
    assert all(len(row.runs) == 1 and row.runs[0] >= 0 for row in rows)


def test_scale_spreads_connections_over_loopback_addresses() -> None:
    assert addresses(50) == ["127.0.0.1"]
    assert addresses(PER_ADDRESS) == ["127.0.0.1"]
    assert addresses(10_000) == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]


async def test_scale_measures_every_contender_through_a_server_restart() -> None:
    settings = dataclasses.replace(QUICK, repeats=1, idle_clients=5, idle_seconds=0.2)  # 50 connections
    rows = await scale(settings)
    assert len(rows) == len(KINDS) * len(METRICS)
    picows = importlib.util.find_spec("picows") is not None
    for row in rows:
        family = "picows" if row.contender.endswith("picows") else "websockets"
        assert row.scenario == f"50 connections, {family}"
        assert row.reference == (row.contender == family)
        if family == "picows" and not picows:
            assert row.note == "skipped: picows not installed"
            continue
        assert row.note == "", row
        assert len(row.runs) == 1, row
        figure = row.runs[0]
        if row.metric in ("RSS per connection", "connect all at once", "all back after a restart"):
            assert figure > 0, row
        elif row.metric == "peak handshakes / 100 ms":
            assert figure >= 1, row
        else:
            assert figure >= 0, row
