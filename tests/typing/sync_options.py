"""What a type checker sees of the sync client's options (checked by tests/test_typing.py)."""

import wsclient
import wsclient.sync


def on_text(message: str) -> None:
    print(message.upper())


def on_bytes(message: bytes) -> None:
    print(len(message))


def subscribe(session: wsclient.sync.Session) -> None:
    session.send("subscribe")


async def async_subscribe(session: wsclient.Session) -> None:
    await session.send("subscribe")


def main() -> None:
    texts = wsclient.sync.Client("ws://127.0.0.1:1", text=True, on_message=on_text)
    reveal_type(texts)  # R: wsclient.sync.Client[str]
    plain = wsclient.sync.Client("ws://127.0.0.1:1", on_connect=subscribe, max_attempts=3)
    reveal_type(plain)  # R: wsclient.sync.Client[str | bytes]
    with wsclient.sync.Client("ws://127.0.0.1:1", text=True) as client:
        for message in client:
            reveal_type(message)  # R: str
        reveal_type(client.recv())  # R: str
    raw = wsclient.sync.Client("ws://127.0.0.1:1", decode=False)
    reveal_type(raw.recv(timeout=1))  # R: bytes
    wsclient.sync.Client("ws://127.0.0.1:1", heartbat=None)  # E: call-overload
    wsclient.sync.Client("ws://127.0.0.1:1", max_atempts=3)  # E: call-overload
    wsclient.sync.Client("ws://127.0.0.1:1", max_attempts="3")  # E: call-overload
    wsclient.sync.Client("ws://127.0.0.1:1", overflow="drop_newest")  # E: call-overload
    wsclient.sync.Client("ws://127.0.0.1:1", on_connect=async_subscribe)  # E: arg-type
    wsclient.sync.Client("ws://127.0.0.1:1", text=True, decode=False)  # E: call-overload
    wsclient.sync.Client("ws://127.0.0.1:1", decode=False, on_message=on_text)  # E: call-overload
    wsclient.sync.Client("ws://127.0.0.1:1", on_message=on_text)  # E: arg-type
