# MCP servers (the Python SDK's FastMCP) over HTTPS in the upstream namespace, one per host
# name on one port. argv: cert, key, port, ready file.
#   mcp.test       streamable HTTP answering in JSON, server name "egret-test-server"
#   stream.test    streamable HTTP answering in server-sent events, same name
#   legacy.test    the older HTTP+SSE transport (GET /sse, POST /messages/), same name
#   impostor.test  streamable HTTP (JSON) naming itself "impostor"
#   split.test     not MCP: GET /sse writes a tools/list result event in 7-byte pieces (CRLF
#                  line endings, so some pieces end between CR and LF); GET /big writes one
#                  200 000-byte event
# A tool call with side effects prints a line (the test reads that it never ran).
import asyncio
import contextlib
import json
import sys

import uvicorn
from mcp.server.fastmcp import FastMCP
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.responses import StreamingResponse
from starlette.routing import Host, Route

cert, key, port, ready = sys.argv[1:5]


def server(name, json_response):
    mcp = FastMCP(
        name,
        json_response=json_response,
        # Clients reach it by test names, not localhost.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )

    @mcp.tool()
    def echo(text: str) -> str:
        """Echo the text back."""
        return f"echo: {text}"

    @mcp.tool()
    def delete_repo(repo: str) -> str:
        """Delete a repository (the test policy never allows it)."""
        print(f"DELETED {repo}", flush=True)
        return f"deleted {repo}"

    @mcp.tool()
    def create_issue(repo: str, title: str) -> str:
        """Create an issue in a repository."""
        print(f"ISSUE {repo} {title}", flush=True)
        return f"created issue in {repo}: {title}"

    return mcp


LISTING = {
    "jsonrpc": "2.0",
    "id": 1,
    "result": {"tools": [{"name": n, "inputSchema": {"type": "object"}} for n in ("echo", "delete_repo")]},
}


async def split_sse(_request):
    event = f"event: message\r\ndata: {json.dumps(LISTING)}\r\n\r\n".encode()

    async def pieces():
        yield b": split upstream\r\n\r\n"
        for i in range(0, len(event), 7):
            yield event[i : i + 7]
            await asyncio.sleep(0.002)
        yield b"event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{}}\r\n\r\n"

    return StreamingResponse(pieces(), media_type="text/event-stream")


async def big_sse(_request):
    async def pieces():
        yield b"data: " + b"x" * 100_000
        await asyncio.sleep(0.01)
        yield b"x" * 100_000 + b"\n\n"

    return StreamingResponse(pieces(), media_type="text/event-stream")


apps = {
    "mcp.test": server("egret-test-server", True).streamable_http_app(),
    "stream.test": server("egret-test-server", False).streamable_http_app(),
    "legacy.test": server("egret-test-server", False).sse_app(),
    "impostor.test": server("impostor", True).streamable_http_app(),
    "split.test": Starlette(routes=[Route("/sse", split_sse), Route("/big", big_sse)]),
}


@contextlib.asynccontextmanager
async def lifespan(_app):
    # Each streamable HTTP app runs its session manager in its lifespan.
    async with contextlib.AsyncExitStack() as stack:
        for h, a in apps.items():
            if h != "split.test":
                await stack.enter_async_context(a.router.lifespan_context(a))
        yield


app = Starlette(routes=[Host(h, a) for h, a in apps.items()], lifespan=lifespan)


class Server(uvicorn.Server):
    async def startup(self, sockets=None):
        await super().startup(sockets)
        open(ready, "w").close()


Server(
    uvicorn.Config(
        app, host="0.0.0.0", port=int(port), ssl_certfile=cert, ssl_keyfile=key, log_level="warning"
    )
).run()
