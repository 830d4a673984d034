// no-http: denies all HTTP egress with 403. No params. Switch to it at runtime:
// egret ctl set-outbound no-http.
import { respond } from "egret-handler";

export function handle() {
  return respond(403, "egret: HTTP egress disabled by policy\n", { "x-egret-handler": "no-http" });
}
