// Test handler: reveals a secret, then fails with an exception whose message contains it.
// egret must answer 502 naming the handler and the message, with the secret redacted.
import { revealSecret, type Context, type Request } from "egret-handler";

export function handle(req: Request, _ctx: Context) {
  const key = revealSecret("API_KEY");
  if (req.path === "/type-error") {
    // A runtime TypeError, not a thrown Error.
    const missing: any = undefined;
    return missing.forward();
  }
  throw new Error(`upstream refused key ${key} for ${req.path}`);
}
