"""Test handler: the stream phase. An event whose data contains "hunter2" is sent with it
redacted, one containing "drop-me" is dropped, the others pass; the redaction names whether
the binding streams (response_streams)."""

from egret_handler import (
    Context,
    Request,
    drop_event,
    forward,
    pass_event,
    replace_event,
    response_streams,
)


def handle(req: Request, ctx: Context):
    return forward()


def on_response_event(event: bytes, ctx: Context):
    text = bytes(event).decode()
    if "drop-me" in text:
        return drop_event()
    if "hunter2" in text:
        return replace_event(text.replace("hunter2", "[redacted]" if response_streams() else "[unset]"))
    return pass_event()
