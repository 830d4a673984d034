"""egret_handler: write egret request handlers in Python.

`egret handler build FILE.py -o OUT.wasm` builds the handler with this module (importable as
`egret_handler`) into a component for the WIT world egret:handler/handler@0.3.0
(handlers-wasm/wit/handler.wit). The handler module defines

    handle(req, ctx)             -> forward(...) | respond(...)        (required)
    on_response(resp, ctx)       -> pass_response(...) | replace_response(...)
    on_response_chunk(chunk, ctx), on_response_end(ctx)                (observe phase)
    on_response_event(event, ctx) -> pass_event() | replace_event(b) | drop_event()
                                                                       (stream phase)
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from componentize_py_types import Err
from wit_world.imports import host as _host
from wit_world.imports import types as _t
from wit_world.imports import streaming as _s

__all__ = [
    "Headers", "Request", "Context", "Response", "Action", "ResponseAction", "SecretValue",
    "forward", "respond", "pass_response", "replace_response", "secret", "secret_template",
    "parts", "basic_auth", "log", "kv", "audit_field", "has_secret", "reveal_secret", "set_secret", "fetch",
    "FetchResponse", "hmac_sha256", "sha256",
]

BytesLike = Union[str, bytes, bytearray]

# Secret values this instance saw (reveal_secret, set_secret): redacted from the message of
# an uncaught exception before it leaves the guest.
_seen_secrets: set[str] = set()


def _redact(text: str) -> str:
    for s in _seen_secrets:
        if s:
            text = text.replace(s, "[redacted]")
    return text


def _bytes(v: BytesLike, what: str) -> bytes:
    if isinstance(v, str):
        return v.encode()
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    raise TypeError(f"{what} must be str or bytes, got {type(v).__name__}")


class Headers:
    """Request or response headers: names lower-case, values raw bytes."""

    def __init__(self, items: List[Tuple[str, bytes]]):
        self._items = items

    def get(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The first value of a header as text (name compared case-insensitively)."""
        b = self.get_bytes(name)
        return default if b is None else b.decode("utf-8", "replace")

    def get_bytes(self, name: str) -> Optional[bytes]:
        n = name.lower()
        for k, v in self._items:
            if k == n:
                return v
        return None

    def get_all(self, name: str) -> List[str]:
        n = name.lower()
        return [v.decode("utf-8", "replace") for k, v in self._items if k == n]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get_bytes(name) is not None

    def items(self) -> Iterator[Tuple[str, str]]:
        """(name, value) pairs in order; repeated headers repeat."""
        for k, v in self._items:
            yield k, v.decode("utf-8", "replace")

    def __iter__(self) -> Iterator[Tuple[str, str]]:
        return self.items()


class Request:
    """The request being decided."""

    def __init__(self, wit: _t.Request):
        h = wit.head
        self.method: str = h.method
        self.scheme: str = h.scheme
        self.authority: str = h.authority
        self.path_with_query: str = h.path_with_query
        self.url: str = f"{h.scheme}://{h.authority}{h.path_with_query}"
        self.headers = Headers(h.headers)
        #: The whole body when the binding buffers bodies (`body = { max_bytes = N }`), else None.
        self.body: Optional[bytes] = wit.body

    @property
    def host(self) -> str:
        """The authority without its port."""
        a = self.authority
        if a.startswith("["):
            end = a.find("]")
            return a if end < 0 else a[: end + 1]
        host, sep, port = a.rpartition(":")
        return host if sep and port.isdigit() else a

    @property
    def path(self) -> str:
        return self.path_with_query.split("?", 1)[0]

    @property
    def query(self) -> Optional[str]:
        parts_ = self.path_with_query.split("?", 1)
        return parts_[1] if len(parts_) == 2 else None

    def text(self) -> str:
        if self.body is None:
            raise ValueError(
                "the request body is not buffered for this handler (set `body = { max_bytes = N }`)"
            )
        return self.body.decode()

    def json(self) -> Any:
        return json.loads(self.text())


class Context:
    """Who is asking and how the binding is configured."""

    def __init__(self, wit: _t.Context):
        self.sandbox_id: str = wit.sandbox_id
        self.handler_name: str = wit.handler_name
        self.params_json: str = wit.params_json
        p = wit.params_json.strip()
        # A binding without params gets {} so defaults apply.
        self.params: Any = {} if p in ("", "null") else json.loads(p)


class Response:
    """A response in the response phase."""

    def __init__(self, wit: _t.Response):
        self.status: int = wit.status
        self.headers = Headers(wit.headers)
        self.body: Optional[bytes] = wit.body


class SecretValue:
    """A value egret fills in with a secret after the handler returns."""

    def __init__(self, wit: _t.HeaderValue):
        self._wit = wit


_ENCODINGS = {e.name.lower().replace("_", "-"): e for e in _t.Encoding}


def secret(name: str) -> SecretValue:
    """The raw value of the named secret."""
    return SecretValue(_t.HeaderValue_Secret(name))


def secret_template(template: str, name: str) -> SecretValue:
    """Every "{}" in template is replaced by the secret, e.g. secret_template("Bearer {}", "tok")."""
    return SecretValue(_t.HeaderValue_SecretTemplate((template, name)))


PartLike = Union[BytesLike, Mapping[str, str]]


def _part(p: PartLike) -> _t.ValuePart:
    if isinstance(p, (str, bytes, bytearray)):
        return _t.ValuePart_Literal(_bytes(p, "a value part"))
    if isinstance(p, Mapping) and "secret" in p:
        enc = p.get("encoding", "raw")
        if enc not in _ENCODINGS:
            raise ValueError(f"unknown secret encoding {enc!r}: one of {', '.join(_ENCODINGS)}")
        return _t.ValuePart_Secret(_t.SecretRef(p["secret"], _ENCODINGS[enc]))
    raise TypeError('a value part is str, bytes or {"secret": NAME, "encoding": ...}')


def parts(*items: PartLike) -> SecretValue:
    """Parts concatenated by egret: literals and {"secret": NAME, "encoding": "base64"} items."""
    return SecretValue(_t.HeaderValue_Parts([_part(p) for p in items]))


def basic_auth(user: Union[PartLike, Sequence[PartLike]], password: Union[PartLike, Sequence[PartLike]]) -> SecretValue:
    """`Basic base64(user:password)`."""

    def side(v: Any) -> List[_t.ValuePart]:
        return [_part(x) for x in v] if isinstance(v, (list, tuple)) else [_part(v)]

    return SecretValue(_t.HeaderValue_BasicAuth(_t.BasicCredentials(side(user), side(password))))


HeaderValue = Union[BytesLike, SecretValue]


def _header_value(name: str, v: HeaderValue) -> _t.HeaderValue:
    if isinstance(v, SecretValue):
        return v._wit
    return _t.HeaderValue_Literal(_bytes(v, f"header {name}"))


def _header_ops(h: Optional[Mapping[str, HeaderValue]]) -> List[_t.HeaderOp]:
    return [_t.HeaderOp(n.lower(), _header_value(n, v)) for n, v in (h or {}).items()]


def _plain_headers(h: Optional[Mapping[str, BytesLike]]) -> List[Tuple[str, bytes]]:
    return [(n.lower(), _bytes(v, f"header {n}")) for n, v in (h or {}).items()]


class Action:
    """What handle() decided: build one with forward() or respond()."""

    def __init__(self, wit: _t.Action):
        self._wit = wit


class ResponseAction:
    """What on_response() decided: build one with pass_response() or replace_response()."""

    def __init__(self, wit: _t.ResponseAction):
        self._wit = wit


def forward(
    set_headers: Optional[Mapping[str, HeaderValue]] = None,
    remove_headers: Sequence[str] = (),
    path: Optional[str] = None,
    body: Optional[Union[PartLike, Sequence[PartLike]]] = None,
) -> Action:
    """Send the request upstream, edited (secrets in set_headers are filled in by egret)."""
    wbody = None
    if body is not None:
        wbody = [_part(p) for p in body] if isinstance(body, (list, tuple)) else [_part(body)]
    return Action(
        _t.Action_Forward(
            _t.ForwardSpec(_header_ops(set_headers), [n.lower() for n in remove_headers], path, wbody)
        )
    )


def _spec(status: int, body: BytesLike, headers: Optional[Mapping[str, BytesLike]]) -> _t.ResponseSpec:
    h = _plain_headers(headers)
    if isinstance(body, str) and not any(n == "content-type" for n, _ in h):
        h.append(("content-type", b"text/plain; charset=utf-8"))
    return _t.ResponseSpec(status, h, _bytes(body, "the body"))


def respond(status: int, body: BytesLike = b"", headers: Optional[Mapping[str, BytesLike]] = None) -> Action:
    """Answer the client directly; nothing reaches upstream. A str body is sent as text/plain."""
    return Action(_t.Action_Respond(_spec(status, body, headers)))


def pass_response(
    set_headers: Optional[Mapping[str, BytesLike]] = None,
    remove_headers: Sequence[str] = (),
    body: Optional[BytesLike] = None,
) -> ResponseAction:
    """Response phase: pass the response on, edited."""
    return ResponseAction(
        _t.ResponseAction_Pass(
            _t.ResponseEdits(
                _plain_headers(set_headers),
                [n.lower() for n in remove_headers],
                None if body is None else _bytes(body, "the body"),
            )
        )
    )


def replace_response(status: int, body: BytesLike = b"", headers: Optional[Mapping[str, BytesLike]] = None) -> ResponseAction:
    """Response phase: replace the response."""
    return ResponseAction(_t.ResponseAction_Replace(_spec(status, body, headers)))


_LEVELS = {"debug": _host.LogLevel.DEBUG, "info": _host.LogLevel.INFO, "warn": _host.LogLevel.WARN, "error": _host.LogLevel.ERROR}


def log(level: str, msg: str) -> None:
    """A log line tagged with the handler and sandbox; granted secret values are redacted."""
    if level not in _LEVELS:
        raise ValueError(f"log level {level!r}: one of debug, info, warn, error")
    _host.log(_LEVELS[level], str(msg))


class HostError(Exception):
    """A host call refused (the message names the reason)."""


def _call(what: str, f: Any, *args: Any) -> Any:
    try:
        return f(*args)
    except Err as e:
        raise HostError(f"{what}: {e.value}") from None


class _Kv:
    """The key-value store of the requesting sandbox."""

    def get(self, key: str) -> Optional[str]:
        v = _host.kv_get(key)
        return None if v is None else v.decode("utf-8", "replace")

    def get_bytes(self, key: str) -> Optional[bytes]:
        return _host.kv_get(key)

    def set(self, key: str, value: BytesLike, ttl_ms: Optional[int] = None) -> None:
        _call(f"kv.set {key}", _host.kv_set, key, _bytes(value, "a kv value"), ttl_ms)

    def delete(self, key: str) -> bool:
        return _host.kv_delete(key)

    def incr(self, key: str, delta: int = 1, ttl_ms: Optional[int] = None) -> int:
        return int(_call(f"kv.incr {key}", _host.kv_incr, key, delta, ttl_ms))

    def compare_and_set(self, key: str, expected: Optional[BytesLike], value: BytesLike, ttl_ms: Optional[int] = None) -> bool:
        exp = None if expected is None else _bytes(expected, "expected")
        return bool(_call(f"kv.compare_and_set {key}", _host.kv_compare_and_set, key, exp, _bytes(value, "a kv value"), ttl_ms))


kv = _Kv()


def audit_field(key: str, value: str) -> None:
    """Attach a short key/value to this request's audit event (`handler_fields`), e.g.
    audit_field("mcp.tool", "delete_repo"). At most 8 per request; a key is 1 to 32 characters
    of a-z A-Z 0-9 . _ -, a value at most 128 bytes (cut), granted secret values redacted."""
    _call(f"audit_field {key}", _host.audit_field, key, str(value))


def has_secret(name: str) -> bool:
    return _host.has_secret(name)


def reveal_secret(name: str) -> str:
    """A secret's value (only with a `reveal` grant). Prefer secret(...) header values."""
    v: str = _call(f"reveal_secret {name}", _host.reveal_secret, name)
    _seen_secrets.add(v)
    return v


def set_secret(name: str, value: BytesLike, ttl_ms: Optional[int] = None) -> None:
    """Store a secret under a name the binding lists in `mint_secrets`."""
    b = _bytes(value, "a secret value")
    _seen_secrets.add(b.decode("utf-8", "replace"))
    _call(f"set_secret {name}", _host.set_secret, name, b, ttl_ms)


class FetchResponse:
    def __init__(self, wit: _t.FetchResponse):
        self.status: int = wit.status
        self.headers = Headers(wit.headers)
        self.body: bytes = wit.body

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


def fetch(
    url: str,
    method: str = "GET",
    headers: Optional[Mapping[str, HeaderValue]] = None,
    body: Union[PartLike, Sequence[PartLike]] = b"",
) -> FetchResponse:
    """An HTTP request through egret (hosts in the binding's `fetch_hosts` only)."""
    wbody = [_part(p) for p in body] if isinstance(body, (list, tuple)) else [_part(body)]
    r = _call(f"fetch {url}", _host.fetch, _t.FetchRequest(method, url, _header_ops(headers), wbody))
    return FetchResponse(r)


def hmac_sha256(secret_name: str, messages: Sequence[BytesLike], template: Optional[str] = None) -> bytes:
    """HMAC-SHA256 keyed by a secret (optionally in a template, "AWS4{}"), chained over messages."""
    return _call(
        f"hmac_sha256 {secret_name}",
        _host.hmac_sha256,
        _t.SecretKey(secret_name, template),
        [_bytes(m, "a message") for m in messages],
    )


def sha256(data: BytesLike) -> bytes:
    return _host.sha256(_bytes(data, "data"))


def _failure(wctx: _t.Context, e: BaseException) -> _t.ResponseSpec:
    msg = _redact(f"{type(e).__name__}: {e}")
    try:
        _host.log(_host.LogLevel.ERROR, f"uncaught exception: {msg}")
    except Exception:  # logging must not hide the original failure
        pass
    body = f"egret: handler `{wctx.handler_name}` failed: {msg}\n".encode()
    return _t.ResponseSpec(502, [("content-type", b"text/plain; charset=utf-8")], body)


class _EventAction:
    """What the stream phase does with one event (or chunk): see pass_event and friends."""

    def __init__(self, wit: Any):
        self._wit = wit


def pass_event() -> _EventAction:
    """Stream phase: send the event (or chunk) on unchanged."""
    return _EventAction(_s.EventAction_Pass())


def replace_event(b: BytesLike) -> _EventAction:
    """Stream phase: send these bytes instead."""
    return _EventAction(_s.EventAction_Replace(_bytes(b, "the replacement event")))


def drop_event() -> _EventAction:
    """Stream phase: send nothing for it."""
    return _EventAction(_s.EventAction_Drop())


def response_streams() -> bool:
    """Whether the binding edits responses as they stream (response = { mode = "stream" })."""
    return _host.response_streams()


def _exports(user: Any) -> Any:
    """Used by `egret handler build`: the world's exports around the user's module."""
    if not callable(getattr(user, "handle", None)):
        raise TypeError("the handler module must define a function `handle(req, ctx)`")

    class Exports:
        def handle(self, ctx: _t.Context, req: _t.Request) -> _t.Action:
            try:
                c = Context(ctx)
                r = user.handle(Request(req), c)
                if not isinstance(r, Action):
                    raise TypeError(f"handle returned {type(r).__name__}: return forward(...) or respond(...)")
                return r._wit
            except Exception as e:
                return _t.Action_Respond(_failure(ctx, e))

        def on_response(self, ctx: _t.Context, resp: _t.Response) -> _t.ResponseAction:
            f = getattr(user, "on_response", None)
            if f is None:
                return _t.ResponseAction_Pass(_t.ResponseEdits([], [], None))
            try:
                r = f(Response(resp), Context(ctx))
                if not isinstance(r, ResponseAction):
                    raise TypeError(
                        f"on_response returned {type(r).__name__}: return pass_response(...) or replace_response(...)"
                    )
                return r._wit
            except Exception as e:
                return _t.ResponseAction_Replace(_failure(ctx, e))

        def on_response_chunk(self, ctx: _t.Context, chunk: bytes) -> None:
            f = getattr(user, "on_response_chunk", None)
            if f is not None:
                f(chunk, Context(ctx))

        def on_response_end(self, ctx: _t.Context) -> None:
            f = getattr(user, "on_response_end", None)
            if f is not None:
                f(Context(ctx))

        # An exception here is not turned into an answer: the response is under way, so the
        # guest traps and egret ends the stream with an audited error.
        def on_response_event(self, ctx: _t.Context, event: bytes) -> _s.EventAction:
            f = getattr(user, "on_response_event", None)
            if f is None:
                return _s.EventAction_Pass()
            r = f(event, Context(ctx))
            if r is None:
                return _s.EventAction_Pass()
            if not isinstance(r, _EventAction):
                raise TypeError(
                    f"on_response_event returned {type(r).__name__}: return pass_event(), replace_event(b) or drop_event()"
                )
            return r._wit

    return Exports
