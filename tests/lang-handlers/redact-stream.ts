// Test handler: the stream phase. An event whose data contains "hunter2" is sent with it
// redacted, one containing "drop-me" is dropped, the others pass; the redaction names whether
// the binding streams (responseStreams).
import {
  dropEvent,
  forward,
  passEvent,
  replaceEvent,
  responseStreams,
  type Context,
  type Request,
} from "egret-handler";

export function handle(_req: Request, _ctx: Context) {
  return forward();
}

export function onResponseEvent(event: Uint8Array, _ctx: Context) {
  const text = new TextDecoder().decode(event);
  if (text.includes("drop-me")) return dropEvent();
  if (text.includes("hunter2")) {
    return replaceEvent(text.replaceAll("hunter2", responseStreams() ? "[redacted]" : "[unset]"));
  }
  return passEvent();
}
