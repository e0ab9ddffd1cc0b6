"""What a type checker sees of the text and decode options and the close policy (checked by tests/test_typing.py)."""

import wsclient


async def on_text(message: str) -> None:
    print(message.upper())


def on_bytes(message: bytes) -> None:
    print(len(message))


async def main() -> None:
    texts = wsclient.Client("ws://127.0.0.1:1", text=True, on_message=on_text)
    reveal_type(texts)  # R: wsclient.client.Client[str]
    plain = wsclient.Client("ws://127.0.0.1:1")
    reveal_type(plain)  # R: wsclient.client.Client[str | bytes]
    async with wsclient.Client("ws://127.0.0.1:1", text=True) as client:
        async for message in client:
            reveal_type(message)  # R: str
        reveal_type(await client.recv())  # R: str
    raw = wsclient.Client("ws://127.0.0.1:1", decode=False, on_message=on_bytes)
    reveal_type(raw)  # R: wsclient.client.Client[bytes]
    reveal_type(await raw.recv())  # R: bytes
    wsclient.Client("ws://127.0.0.1:1", text=True, decode=False)  # E: call-overload
    wsclient.Client("ws://127.0.0.1:1", decode=False, on_message=on_text)  # E: call-overload
    wsclient.Client("ws://127.0.0.1:1", on_message=on_text)  # E: arg-type
    wsclient.Client("ws://127.0.0.1:1", close_actions={4002: "retry"})  # E: dict-item
    annotated: wsclient.Client = plain
    print(annotated)
