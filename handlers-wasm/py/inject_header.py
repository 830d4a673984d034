"""inject-header: forwards every request with one header set from a secret the handler never
sees (egret fills it in after the handler returns).

Params: {"header": "authorization", "secret": "github-token", "template": "Bearer {}"}
(template defaults to "{}", the raw value). Route it to the one host that needs the credential
([[routes]] host = "api.github.com")."""

from egret_handler import Action, Context, Request, forward, respond, secret_template

NAME = "inject-header"


def handle(req: Request, ctx: Context) -> Action:
    header = ctx.params.get("header")
    secret = ctx.params.get("secret")
    if not header or not secret:
        return respond(500, f'{NAME}: bad params: "header" and "secret" are required\n', {"x-egret-handler": NAME})
    return forward(
        set_headers={
            "x-egret-handler": NAME,
            header: secret_template(ctx.params.get("template", "{}"), secret),
        }
    )
