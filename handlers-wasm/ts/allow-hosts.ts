// allow-hosts: only requests to listed hosts are forwarded; others get 403 naming the host.
// Params: {"hosts": ["api.github.com", "*.googleapis.com"]}: an exact host (case-insensitive,
// port ignored) or "*.suffix" (any subdomain of suffix, not suffix itself). Switch the list at
// runtime: egret ctl set-outbound allow-hosts --params '{"hosts": [...]}'.
import { forward, respond, type Context, type Request } from "egret-handler";

const NAME = "allow-hosts";

function matches(pattern: string, host: string): boolean {
  if (pattern.startsWith("*.")) {
    const suffix = pattern.slice(2);
    return host.length > suffix.length + 1 && host.endsWith(`.${suffix}`);
  }
  return pattern === host;
}

export function handle(req: Request, ctx: Context) {
  const hosts: string[] = ctx.params.hosts ?? [];
  const host = req.host.replace(/\.+$/, "").toLowerCase();
  if (hosts.some((p) => matches(p.toLowerCase(), host))) {
    return forward({ setHeaders: { "x-egret-handler": NAME } });
  }
  return respond(403, `egret: host ${host} is not allowed by handler ${NAME}\n`, {
    "x-egret-handler": NAME,
  });
}
