"""per-sandbox-token: each sandbox gets its own credential. The kv store of the requesting
sandbox maps the key "token-secret" (configurable) to the *name* of a secret, which is injected
as "authorization: Bearer {}". Without a kv entry the request gets 403 naming the sandbox.

Params (all optional): {"key": "token-secret", "header": "authorization", "template": "Bearer {}"}."""

from egret_handler import Action, Context, Request, forward, kv, respond, secret_template

NAME = "per-sandbox-token"


def handle(req: Request, ctx: Context) -> Action:
    key = ctx.params.get("key", "token-secret")
    header = ctx.params.get("header", "authorization")
    template = ctx.params.get("template", "Bearer {}")
    name = (kv.get(key) or "").strip()
    if not name:
        return respond(
            403,
            f"egret: no token configured for sandbox {ctx.sandbox_id} (kv key {key})\n",
            {"x-egret-handler": NAME},
        )
    return forward(set_headers={"x-egret-handler": NAME, header: secret_template(template, name)})
