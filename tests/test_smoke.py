import wsclient
from wsclient.testing import FlakyServer


async def test_echo_round_trip(server: FlakyServer) -> None:
    async with wsclient.Client(server.url) as client:
        await client.send("hello")
        assert await client.recv() == "hello"
    assert client.state is wsclient.State.CLOSED
