// per-sandbox-token: each sandbox gets its own credential. The kv store of the requesting
// sandbox maps the key "token-secret" (configurable) to the *name* of a secret, which is
// injected as "authorization: Bearer {}". Without a kv entry the request gets 403 naming the
// sandbox. Params (all optional): {"key": "token-secret", "header": "authorization",
// "template": "Bearer {}"}.
import { forward, kv, respond, secretTemplate, type Context, type Request } from "egret-handler";

const NAME = "per-sandbox-token";

export function handle(_req: Request, ctx: Context) {
  const key: string = ctx.params.key ?? "token-secret";
  const header: string = ctx.params.header ?? "authorization";
  const template: string = ctx.params.template ?? "Bearer {}";
  const secretName = kv.get(key)?.trim();
  if (!secretName) {
    return respond(403, `egret: no token configured for sandbox ${ctx.sandboxId} (kv key ${key})\n`, {
      "x-egret-handler": NAME,
    });
  }
  return forward({
    setHeaders: { "x-egret-handler": NAME, [header]: secretTemplate(template, secretName) },
  });
}
