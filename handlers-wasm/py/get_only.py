"""get-only: read-only egress. GET and HEAD are forwarded; any other method gets 405 (and is
logged). No params. The Python twin of handlers-wasm/get-only (Rust)."""

from egret_handler import Action, Context, Request, forward, log, respond

NAME = "get-only"


def handle(req: Request, ctx: Context) -> Action:
    if req.method in ("GET", "HEAD"):
        return forward(set_headers={"x-egret-handler": NAME})
    log("info", f"sandbox {ctx.sandbox_id} tried {req.method} {req.url}: blocked")
    return respond(
        405,
        f"egret: method {req.method} is not allowed (read-only egress)\n",
        {"allow": "GET, HEAD", "x-egret-handler": NAME},
    )
