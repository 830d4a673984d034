"""allow-hosts: only requests to listed hosts are forwarded; others get 403 naming the host.

Params: {"hosts": ["api.github.com", "*.googleapis.com"]}: an exact host (case-insensitive,
port ignored) or "*.suffix" (any subdomain of suffix, not suffix itself). Switch the list at
runtime: egret ctl set-outbound allow-hosts --params '{"hosts": [...]}'."""

from egret_handler import Action, Context, Request, forward, respond

NAME = "allow-hosts"


def matches(pattern: str, host: str) -> bool:
    if pattern.startswith("*."):
        suffix = pattern[2:]
        return len(host) > len(suffix) + 1 and host.endswith("." + suffix)
    return pattern == host


def handle(req: Request, ctx: Context) -> Action:
    hosts = ctx.params.get("hosts", [])
    host = req.host.rstrip(".").lower()
    if any(matches(p.lower(), host) for p in hosts):
        return forward(set_headers={"x-egret-handler": NAME})
    return respond(403, f"egret: host {host} is not allowed by handler {NAME}\n", {"x-egret-handler": NAME})
