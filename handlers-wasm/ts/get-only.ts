// get-only: read-only egress. GET and HEAD are forwarded; any other method gets 405 (and is
// logged). No params. The TypeScript twin of handlers-wasm/get-only (Rust).
import { forward, log, respond, type Context, type Request } from "egret-handler";

const NAME = "get-only";

export function handle(req: Request, ctx: Context) {
  if (req.method === "GET" || req.method === "HEAD") {
    return forward({ setHeaders: { "x-egret-handler": NAME } });
  }
  log("info", `sandbox ${ctx.sandboxId} tried ${req.method} ${req.url}: blocked`);
  return respond(405, `egret: method ${req.method} is not allowed (read-only egress)\n`, {
    allow: "GET, HEAD",
    "x-egret-handler": NAME,
  });
}
