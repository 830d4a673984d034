"""no-http: denies all HTTP egress with 403. No params. Switch to it at runtime:
egret ctl set-outbound no-http."""

from egret_handler import Action, Context, Request, respond


def handle(req: Request, ctx: Context) -> Action:
    return respond(403, "egret: HTTP egress disabled by policy\n", {"x-egret-handler": "no-http"})
