"""What a consumer puts on the dead-letter topic: the message exactly as read, plus who parked it and why.

The raw key, value and headers (the CloudEvents ones included) stay as they were, so a replay
publishes the same bytes; docs/operations.md lists the headers added here.
"""

from onefunnel.shared.bus import Message, OutgoingMessage


def parked(message: Message, *, service: str, reason: str, detail: str) -> OutgoingMessage:
    """`message` for the dead-letter topic, with `onefunnel_service`, `_reason` and `_origin` added."""
    return OutgoingMessage(
        key=message.key,
        value=message.value,
        headers=(
            *message.headers,
            ("onefunnel_service", service.encode()),
            ("onefunnel_reason", f"{reason}: {detail}".encode()),
            ("onefunnel_origin", f"{message.topic}/{message.partition}/{message.offset}".encode()),
        ),
    )
