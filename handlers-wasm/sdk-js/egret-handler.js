// egret-handler: write egret request handlers in JavaScript or TypeScript.
//
// `egret handler build FILE.js|FILE.ts -o OUT.wasm` bundles this module with the handler
// (imported as "egret-handler") and turns the result into a component for the WIT world
// egret:handler/handler@0.3.0 (handlers-wasm/wit/handler.wit). The handler module exports
//
//   handle(req, ctx)            -> forward(...) | respond(...)        (required)
//   onResponse(resp, ctx)       -> passResponse(...) | replaceResponse(...)
//   onResponseChunk(chunk, ctx) / onResponseEnd(ctx)                   (observe phase)
//   onResponseEvent(event, ctx) -> passEvent() | replaceEvent(bytes) | dropEvent()
//                                                                   (stream phase)
//
// Types: egret-handler.d.ts next to this file.
import * as host from "egret:handler/host@0.3.0";

const enc = new TextEncoder();
const dec = new TextDecoder();

function bytes(v, what) {
  if (v instanceof Uint8Array) return v;
  if (typeof v === "string") return enc.encode(v);
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  throw new TypeError(`${what} must be a string or a Uint8Array, got ${typeof v}`);
}

// Secret values this instance saw (revealSecret, setSecret): redacted from the message of an
// uncaught exception before it leaves the guest.
const seenSecrets = new Set();

function redact(text) {
  let out = text;
  for (const s of seenSecrets) {
    if (s.length > 0) out = out.split(s).join("[redacted]");
  }
  return out;
}

/** Request or response headers: names are lower-case, values raw bytes. */
export class Headers {
  constructor(list) {
    this._list = list;
  }
  /** The first value of a header as text (names compared case-insensitively), or null. */
  get(name) {
    const b = this.getBytes(name);
    return b === null ? null : dec.decode(b);
  }
  /** The first value of a header as bytes, or null. */
  getBytes(name) {
    const n = name.toLowerCase();
    for (const [k, v] of this._list) if (k === n) return v;
    return null;
  }
  /** Every value of a header, as text. */
  getAll(name) {
    const n = name.toLowerCase();
    return this._list.filter(([k]) => k === n).map(([, v]) => dec.decode(v));
  }
  has(name) {
    return this.getBytes(name) !== null;
  }
  /** [name, value] pairs in order; repeated headers repeat. */
  *entries() {
    for (const [k, v] of this._list) yield [k, dec.decode(v)];
  }
  [Symbol.iterator]() {
    return this.entries();
  }
}

/** The request being decided. */
export class Request {
  constructor(wit) {
    const h = wit.head;
    this.method = h.method;
    this.scheme = h.scheme;
    this.authority = h.authority;
    this.pathWithQuery = h.pathWithQuery;
    this.url = `${h.scheme}://${h.authority}${h.pathWithQuery}`;
    this.headers = new Headers(h.headers);
    /** The whole body when the binding buffers bodies (`body = { max_bytes = N }`), else null. */
    this.body = wit.body === undefined || wit.body === null ? null : wit.body;
  }
  /** The authority without its port. */
  get host() {
    const a = this.authority;
    if (a.startsWith("[")) {
      const end = a.indexOf("]");
      return end < 0 ? a : a.slice(0, end + 1);
    }
    const i = a.lastIndexOf(":");
    return i >= 0 && /^[0-9]+$/.test(a.slice(i + 1)) ? a.slice(0, i) : a;
  }
  /** The path without the query. */
  get path() {
    const i = this.pathWithQuery.indexOf("?");
    return i < 0 ? this.pathWithQuery : this.pathWithQuery.slice(0, i);
  }
  /** The query without "?", or null. */
  get query() {
    const i = this.pathWithQuery.indexOf("?");
    return i < 0 ? null : this.pathWithQuery.slice(i + 1);
  }
  /** The buffered body as text (throws when the body is not buffered). */
  text() {
    if (this.body === null) {
      throw new Error(
        "the request body is not buffered for this handler (set `body = { max_bytes = N }`)",
      );
    }
    return dec.decode(this.body);
  }
  /** The buffered body parsed as JSON. */
  json() {
    return JSON.parse(this.text());
  }
}

/** Who is asking and how the binding is configured. */
export class Context {
  constructor(wit) {
    this.sandboxId = wit.sandboxId;
    this.handlerName = wit.handlerName;
    this.paramsJson = wit.paramsJson;
    const p = wit.paramsJson.trim();
    // A binding without params gets {} so defaults apply.
    this.params = p === "" || p === "null" ? {} : JSON.parse(p);
  }
}

/** A response in the response phase. */
export class Response {
  constructor(wit) {
    this.status = wit.status;
    this.headers = new Headers(wit.headers);
    this.body = wit.body === undefined || wit.body === null ? null : wit.body;
  }
  text() {
    return this.body === null ? "" : dec.decode(this.body);
  }
}

const SECRET = Symbol("egret-secret-value");
const ENCODINGS = ["raw", "base64", "base64url", "percent", "json-string", "hex"];

/** A header value egret fills in with the named secret after the handler returns. */
export function secret(name) {
  return { [SECRET]: { tag: "secret", val: String(name) } };
}

/** "Bearer {}": every "{}" in the template is replaced by the secret, by egret. */
export function secretTemplate(template, name) {
  return { [SECRET]: { tag: "secret-template", val: [String(template), String(name)] } };
}

/**
 * Parts concatenated by egret: strings / bytes as they are, `{ secret: NAME, encoding? }` for a
 * secret written in an encoding ("raw", "base64", "base64url", "percent", "json-string", "hex").
 */
export function parts(...items) {
  return { [SECRET]: { tag: "parts", val: items.map(valuePart) } };
}

/** `Basic base64(user:password)`, each side a string or parts(...) items. */
export function basicAuth(user, password) {
  const side = (v) => (Array.isArray(v) ? v : [v]).map(valuePart);
  return { [SECRET]: { tag: "basic-auth", val: { user: side(user), password: side(password) } } };
}

function valuePart(p) {
  if (typeof p === "string" || p instanceof Uint8Array) {
    return { tag: "literal", val: bytes(p, "a value part") };
  }
  if (p && typeof p === "object" && typeof p.secret === "string") {
    const encoding = p.encoding ?? "raw";
    if (!ENCODINGS.includes(encoding)) {
      throw new TypeError(`unknown secret encoding ${JSON.stringify(encoding)}: one of ${ENCODINGS.join(", ")}`);
    }
    return { tag: "secret", val: { name: p.secret, encoding } };
  }
  throw new TypeError("a value part is a string, a Uint8Array or { secret: NAME, encoding? }");
}

function headerValue(name, v) {
  if (v && typeof v === "object" && v[SECRET]) return v[SECRET];
  if (typeof v === "string" || v instanceof Uint8Array) return { tag: "literal", val: bytes(v, `header ${name}`) };
  throw new TypeError(`header ${name}: a value is a string, a Uint8Array, secret(...) or secretTemplate(...)`);
}

function headerOps(obj) {
  return Object.entries(obj ?? {}).map(([name, value]) => ({
    name: name.toLowerCase(),
    value: headerValue(name, value),
  }));
}

function plainHeaders(obj, what) {
  return Object.entries(obj ?? {}).map(([name, value]) => [name.toLowerCase(), bytes(value, `${what} ${name}`)]);
}

const ACTION = Symbol("egret-action");

/**
 * Send the request upstream, edited: `setHeaders` (values may be secret(...) /
 * secretTemplate(...)), `removeHeaders`, `path` (origin-form path and query) and, for bindings
 * that buffer the body, a replacement `body`.
 */
export function forward(opts = {}) {
  let body;
  if (opts.body !== undefined && opts.body !== null) {
    body = (Array.isArray(opts.body) ? opts.body : [opts.body]).map(valuePart);
  }
  return {
    [ACTION]: {
      tag: "forward",
      val: {
        setHeaders: headerOps(opts.setHeaders),
        removeHeaders: (opts.removeHeaders ?? []).map((n) => n.toLowerCase()),
        pathWithQuery: opts.path ?? undefined,
        body,
      },
    },
  };
}

/** Answer the client directly; nothing reaches upstream. A string body is sent as text/plain. */
export function respond(status, body = "", headers = {}) {
  const h = plainHeaders(headers, "header");
  if (typeof body === "string" && !h.some(([n]) => n === "content-type")) {
    h.push(["content-type", enc.encode("text/plain; charset=utf-8")]);
  }
  return { [ACTION]: { tag: "respond", val: { status, headers: h, body: bytes(body, "the body") } } };
}

/** Response phase: pass the response on, edited. */
export function passResponse(opts = {}) {
  return {
    [ACTION]: {
      tag: "pass",
      val: {
        setHeaders: plainHeaders(opts.setHeaders, "header"),
        removeHeaders: (opts.removeHeaders ?? []).map((n) => n.toLowerCase()),
        body: opts.body === undefined || opts.body === null ? undefined : bytes(opts.body, "the body"),
      },
    },
  };
}

/** Response phase: replace the response with another one. */
export function replaceResponse(status, body = "", headers = {}) {
  const r = respond(status, body, headers)[ACTION];
  return { [ACTION]: { tag: "replace", val: r.val } };
}

/** Log a line tagged with the handler and sandbox; granted secret values are redacted. */
export function log(level, msg) {
  if (!["debug", "info", "warn", "error"].includes(level)) {
    throw new TypeError(`log level ${JSON.stringify(level)}: one of debug, info, warn, error`);
  }
  host.log(level, String(msg));
}

function errText(e) {
  if (e && typeof e === "object" && "payload" in e) return String(e.payload);
  return e instanceof Error ? e.message : String(e);
}

function call(what, f) {
  try {
    return f();
  } catch (e) {
    throw new Error(`${what}: ${errText(e)}`);
  }
}

function ttl(opts) {
  return opts && opts.ttlMs !== undefined ? BigInt(opts.ttlMs) : undefined;
}

/** The key-value store of the requesting sandbox. */
export const kv = {
  /** The value as text, or null. */
  get(key) {
    const v = host.kvGet(key);
    return v === undefined || v === null ? null : dec.decode(v);
  },
  /** The value as bytes, or null. */
  getBytes(key) {
    const v = host.kvGet(key);
    return v === undefined || v === null ? null : v;
  },
  set(key, value, opts) {
    call(`kv.set ${key}`, () => host.kvSet(key, bytes(value, "a kv value"), ttl(opts)));
  },
  /** Whether the key was there. */
  delete(key) {
    return host.kvDelete(key);
  },
  /** Atomically add delta (default 1); the new value. */
  incr(key, delta = 1, opts) {
    return Number(call(`kv.incr ${key}`, () => host.kvIncr(key, BigInt(delta), ttl(opts))));
  },
  /** Set only if the current value is `expected` (null: only if absent); whether it was set. */
  compareAndSet(key, expected, value, opts) {
    const exp = expected === null || expected === undefined ? undefined : bytes(expected, "expected");
    return call(`kv.compareAndSet ${key}`, () =>
      host.kvCompareAndSet(key, exp, bytes(value, "a kv value"), ttl(opts)),
    );
  },
};

/**
 * Attach a short key/value to this request's audit event (`handler_fields`), e.g.
 * auditField("mcp.tool", "delete_repo"). At most 8 per request; a key is 1 to 32 characters of
 * a-z A-Z 0-9 . _ -, a value at most 128 bytes (cut), granted secret values redacted.
 */
export function auditField(key, value) {
  call(`auditField ${key}`, () => host.auditField(key, String(value)));
}

/** Whether a secret of that name exists and is granted to this handler. */
export function hasSecret(name) {
  return host.hasSecret(name);
}

/** A secret's value (only with a `reveal` grant). Prefer secret(...) header values. */
export function revealSecret(name) {
  const v = call(`revealSecret ${name}`, () => host.revealSecret(name));
  seenSecrets.add(v);
  return v;
}

/** Store a secret under a name the binding lists in `mint_secrets`. */
export function setSecret(name, value, opts) {
  const b = bytes(value, "a secret value");
  seenSecrets.add(dec.decode(b));
  call(`setSecret ${name}`, () => host.setSecret(name, b, ttl(opts)));
}

/**
 * An HTTP request through egret (hosts in the binding's `fetch_hosts` only). Header values may
 * be secret(...) values; `body` a string, bytes or a list of parts. Throws with the reason.
 */
export function fetch(url, opts = {}) {
  let body = opts.body ?? [];
  body = (Array.isArray(body) ? body : [body]).map(valuePart);
  const r = call(`fetch ${url}`, () =>
    host.fetch({ method: opts.method ?? "GET", url, headers: headerOps(opts.headers), body }),
  );
  return {
    status: r.status,
    headers: new Headers(r.headers),
    body: r.body,
    text: () => dec.decode(r.body),
    json: () => JSON.parse(dec.decode(r.body)),
  };
}

/** HMAC-SHA256 keyed by a secret (optionally in a template, "AWS4{}"), chained over messages. */
export function hmacSha256(secretName, messages, template) {
  return call(`hmacSha256 ${secretName}`, () =>
    host.hmacSha256({ name: secretName, template: template ?? undefined }, messages.map((m) => bytes(m, "a message"))),
  );
}

export function sha256(data) {
  return host.sha256(bytes(data, "data"));
}

export function hex(b) {
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

// The one-file style (`return respond(405)` with no import) works too.
Object.assign(globalThis, { forward, respond, log, secret, secretTemplate, kv });

function unwrap(result, phase, ctx) {
  if (result && typeof result === "object" && result[ACTION]) return result[ACTION];
  throw new Error(
    `${phase} of handler \`${ctx.handlerName}\` returned ${result === undefined ? "nothing" : typeof result}: ` +
      "return forward(...) or respond(...) (passResponse/replaceResponse in onResponse)",
  );
}

function failure(ctx, e) {
  const msg = redact(e instanceof Error ? `${e.name}: ${e.message}` : `uncaught exception: ${String(e)}`);
  try {
    host.log("error", `uncaught exception: ${msg}`);
  } catch {
    // logging must not hide the original failure
  }
  return `egret: handler \`${ctx.handlerName}\` failed: ${msg}\n`;
}

function failed(ctx, e) {
  return { tag: "respond", val: { status: 502, headers: [["content-type", enc.encode("text/plain; charset=utf-8")]], body: enc.encode(failure(ctx, e)) } };
}

/** Used by `egret handler build`: the world's exports around the user's module. */
export function __exports(user) {
  if (typeof user.handle !== "function") {
    throw new Error("the handler module must export a function `handle(req, ctx)`");
  }
  return {
    handle(ctxWit, reqWit) {
      try {
        const ctx = new Context(ctxWit);
        return unwrap(user.handle(new Request(reqWit), ctx), "handle", ctx);
      } catch (e) {
        return failed(ctxWit, e);
      }
    },
    onResponse(ctxWit, respWit) {
      if (typeof user.onResponse !== "function") {
        return { tag: "pass", val: { setHeaders: [], removeHeaders: [], body: undefined } };
      }
      try {
        const ctx = new Context(ctxWit);
        return unwrap(user.onResponse(new Response(respWit), ctx), "onResponse", ctx);
      } catch (e) {
        const r = failed(ctxWit, e).val;
        return { tag: "replace", val: r };
      }
    },
    onResponseChunk(ctxWit, chunk) {
      if (typeof user.onResponseChunk === "function") user.onResponseChunk(chunk, new Context(ctxWit));
    },
    onResponseEnd(ctxWit) {
      if (typeof user.onResponseEnd === "function") user.onResponseEnd(new Context(ctxWit));
    },
    // An exception here is not turned into an answer: the response is under way, so the
    // guest traps and egret ends the stream with an audited error.
    onResponseEvent(ctxWit, event) {
      if (typeof user.onResponseEvent !== "function") return { tag: "pass" };
      const r = user.onResponseEvent(event, new Context(ctxWit));
      if (r === undefined) return { tag: "pass" };
      if (!r || !["pass", "replace", "drop"].includes(r.tag)) {
        throw new Error("onResponseEvent must return passEvent(), replaceEvent(bytes) or dropEvent()");
      }
      return r;
    },
  };
}

/** Stream phase: send the event (or chunk) on unchanged. */
export function passEvent() {
  return { tag: "pass" };
}

/** Stream phase: send these bytes (string or Uint8Array) instead. */
export function replaceEvent(b) {
  return { tag: "replace", val: bytes(b, "the replacement event") };
}

/** Stream phase: send nothing for it. */
export function dropEvent() {
  return { tag: "drop" };
}

/** Whether the binding edits responses as they stream (`response = { mode = "stream" }`). */
export function responseStreams() {
  return host.responseStreams();
}
