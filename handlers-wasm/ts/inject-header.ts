// inject-header: forwards every request with one header set from a secret the handler never
// sees (egret fills it in after the handler returns).
// Params: {"header": "authorization", "secret": "github-token", "template": "Bearer {}"}
// (template defaults to "{}", the raw value). Route it to the one host that needs the
// credential ([[routes]] host = "api.github.com").
import { forward, respond, secretTemplate, type Context, type Request } from "egret-handler";

const NAME = "inject-header";

interface Params {
  header?: string;
  secret?: string;
  template?: string;
}

export function handle(_req: Request, ctx: Context) {
  const p = ctx.params as Params;
  if (!p.header || !p.secret) {
    return respond(500, `${NAME}: bad params: "header" and "secret" are required\n`, {
      "x-egret-handler": NAME,
    });
  }
  return forward({
    setHeaders: {
      "x-egret-handler": NAME,
      [p.header]: secretTemplate(p.template ?? "{}", p.secret),
    },
  });
}
