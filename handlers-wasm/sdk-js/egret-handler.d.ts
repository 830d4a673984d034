// Types of the "egret-handler" module (handlers-wasm/sdk-js/egret-handler.js): the JavaScript
// shape of the WIT world egret:handler/handler@0.3.0 (handlers-wasm/wit/handler.wit).
// For editor support in a TypeScript handler, map the module name in tsconfig.json:
//   "compilerOptions": { "paths": { "egret-handler": ["<egret>/handlers-wasm/sdk-js/egret-handler.d.ts"] } }

/** Bytes or text (encoded as UTF-8). */
export type BytesLike = string | Uint8Array;

/** Request or response headers: names lower-case, values raw bytes. */
export declare class Headers implements Iterable<[string, string]> {
  /** The first value as text (name compared case-insensitively), or null. */
  get(name: string): string | null;
  /** The first value as bytes, or null. */
  getBytes(name: string): Uint8Array | null;
  /** Every value, as text. */
  getAll(name: string): string[];
  has(name: string): boolean;
  /** [name, value] pairs in order; repeated headers repeat. */
  entries(): IterableIterator<[string, string]>;
  [Symbol.iterator](): IterableIterator<[string, string]>;
}

/** The request being decided. */
export declare class Request {
  /** As sent by the client, e.g. "GET". */
  readonly method: string;
  /** "http" or "https". */
  readonly scheme: string;
  /** Host and optional port the client addressed. */
  readonly authority: string;
  /** Origin-form target, e.g. "/v1/items?limit=10". */
  readonly pathWithQuery: string;
  /** scheme://authority/path?query */
  readonly url: string;
  readonly headers: Headers;
  /** The whole body when the binding buffers bodies (`body = { max_bytes = N }`), else null. */
  readonly body: Uint8Array | null;
  /** The authority without its port. */
  readonly host: string;
  /** The path without the query. */
  readonly path: string;
  /** The query without "?", or null. */
  readonly query: string | null;
  /** The buffered body as text (throws when it is not buffered). */
  text(): string;
  /** The buffered body parsed as JSON. */
  json<T = unknown>(): T;
}

/** Who is asking and how the binding is configured. */
export declare class Context {
  readonly sandboxId: string;
  /** The binding's name, as configured by the admin. */
  readonly handlerName: string;
  /** The binding's params, parsed ({} when it has none). */
  readonly params: any;
  readonly paramsJson: string;
}

/** A response in the response phase. */
export declare class Response {
  readonly status: number;
  readonly headers: Headers;
  /** The whole body when the binding buffers responses, else null. */
  readonly body: Uint8Array | null;
  text(): string;
}

declare const secretValue: unique symbol;
/** A value egret fills in with a secret after the handler returns (the handler never sees it). */
export interface SecretValue {
  readonly [secretValue]: unknown;
}

export type Encoding = "raw" | "base64" | "base64url" | "percent" | "json-string" | "hex";
/** A literal, or a secret written in an encoding. */
export type ValuePart = BytesLike | { secret: string; encoding?: Encoding };
export type HeaderValue = BytesLike | SecretValue;

/** The raw value of the named secret. */
export declare function secret(name: string): SecretValue;
/** Every "{}" in template replaced by the secret: secretTemplate("Bearer {}", "github-token"). */
export declare function secretTemplate(template: string, name: string): SecretValue;
/** Parts concatenated by egret. */
export declare function parts(...items: ValuePart[]): SecretValue;
/** `Basic base64(user:password)`. */
export declare function basicAuth(user: ValuePart | ValuePart[], password: ValuePart | ValuePart[]): SecretValue;

declare const action: unique symbol;
/** What handle() decided: forward(...) or respond(...). */
export interface Action {
  readonly [action]: "request";
}
/** What onResponse() decided: passResponse(...) or replaceResponse(...). */
export interface ResponseAction {
  readonly [action]: "response";
}

export interface ForwardOptions {
  /** Headers to set (replace); values may be secret(...) / secretTemplate(...). */
  setHeaders?: Record<string, HeaderValue>;
  removeHeaders?: string[];
  /** New origin-form path and query ("/..."); scheme and authority cannot change. */
  path?: string;
  /** A replacement body (bindings that buffer the body only); secrets may be filled in. */
  body?: ValuePart | ValuePart[];
}

/** Send the request upstream, edited. */
export declare function forward(opts?: ForwardOptions): Action;
/** Answer the client directly; a string body is sent as text/plain. */
export declare function respond(status: number, body?: BytesLike, headers?: Record<string, BytesLike>): Action;
/** Response phase: pass the response on, edited. */
export declare function passResponse(opts?: {
  setHeaders?: Record<string, BytesLike>;
  removeHeaders?: string[];
  body?: BytesLike;
}): ResponseAction;
/** Response phase: replace the response. */
export declare function replaceResponse(status: number, body?: BytesLike, headers?: Record<string, BytesLike>): ResponseAction;

export type LogLevel = "debug" | "info" | "warn" | "error";
/** A log line tagged with the handler and sandbox; granted secret values are redacted. */
export declare function log(level: LogLevel, msg: string): void;

export interface Ttl {
  ttlMs?: number;
}
/** The key-value store of the requesting sandbox. Refusals throw with the reason. */
export declare const kv: {
  get(key: string): string | null;
  getBytes(key: string): Uint8Array | null;
  set(key: string, value: BytesLike, opts?: Ttl): void;
  delete(key: string): boolean;
  incr(key: string, delta?: number, opts?: Ttl): number;
  compareAndSet(key: string, expected: BytesLike | null, value: BytesLike, opts?: Ttl): boolean;
};

/** Attach a short key/value to this request's audit event (`handler_fields`); at most 8. */
export declare function auditField(key: string, value: string): void;
export declare function hasSecret(name: string): boolean;
/** A secret's value (only with a `reveal` grant). Prefer secret(...) header values. */
export declare function revealSecret(name: string): string;
/** Store a secret under a name the binding lists in `mint_secrets`. */
export declare function setSecret(name: string, value: BytesLike, opts?: Ttl): void;

export interface FetchResponse {
  readonly status: number;
  readonly headers: Headers;
  readonly body: Uint8Array;
  text(): string;
  json<T = unknown>(): T;
}
/** An HTTP request through egret (hosts in the binding's `fetch_hosts` only); throws with the reason. */
export declare function fetch(
  url: string,
  opts?: { method?: string; headers?: Record<string, HeaderValue>; body?: ValuePart | ValuePart[] },
): FetchResponse;
/** HMAC-SHA256 keyed by a secret (optionally in a template, "AWS4{}"), chained over messages. */
export declare function hmacSha256(secretName: string, messages: BytesLike[], template?: string): Uint8Array;
export declare function sha256(data: BytesLike): Uint8Array;
export declare function hex(bytes: Uint8Array): string;

/** The exports a handler module provides. */
export interface HandlerModule {
  handle(req: Request, ctx: Context): Action;
  onResponse?(resp: Response, ctx: Context): ResponseAction;
  onResponseChunk?(chunk: Uint8Array, ctx: Context): void;
  onResponseEnd?(ctx: Context): void;
}

declare global {
  // The one-file style without imports.
  function forward(opts?: ForwardOptions): Action;
  function respond(status: number, body?: BytesLike, headers?: Record<string, BytesLike>): Action;
  function log(level: LogLevel, msg: string): void;
  function secret(name: string): SecretValue;
  function secretTemplate(template: string, name: string): SecretValue;
}

/** What the stream phase does with one event (or chunk). */
export type EventAction = { tag: "pass" } | { tag: "replace"; val: Uint8Array } | { tag: "drop" };
/** Stream phase: send it on unchanged. */
export function passEvent(): EventAction;
/** Stream phase: send these bytes instead. */
export function replaceEvent(b: string | Uint8Array): EventAction;
/** Stream phase: send nothing for it. */
export function dropEvent(): EventAction;
/** Whether the binding edits responses as they stream (`response = { mode = "stream" }`). */
export function responseStreams(): boolean;
