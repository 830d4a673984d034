"""Test handler: reveals a secret, then fails with an exception whose message contains it.
egret must answer 502 naming the handler and the message, with the secret redacted."""

from egret_handler import Context, Request, reveal_secret


def handle(req: Request, ctx: Context):
    key = reveal_secret("API_KEY")
    if req.path == "/type-error":
        return {}["missing"]
    raise RuntimeError(f"upstream refused key {key} for {req.path}")
