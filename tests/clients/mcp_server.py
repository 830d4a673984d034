# MCP servers (the Python SDK's FastMCP) over HTTPS in the upstream namespace, one per host
# name on one port. argv: cert, key, port, ready file.
#   mcp.test       streamable HTTP answering in JSON, server name "egret-test-server"
#   stream.test    streamable HTTP answering in server-sent events, same name
#   legacy.test    the older HTTP+SSE transport (GET /sse, POST /messages/), same name
#   impostor.test  streamable HTTP (JSON) naming itself "impostor"
# A tool call with side effects prints a line (the test reads that it never ran).
import contextlib
import sys

import uvicorn
from mcp.server.fastmcp import FastMCP
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.routing import Host

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


apps = {
    "mcp.test": server("egret-test-server", True).streamable_http_app(),
    "stream.test": server("egret-test-server", False).streamable_http_app(),
    "legacy.test": server("egret-test-server", False).sse_app(),
    "impostor.test": server("impostor", True).streamable_http_app(),
}


@contextlib.asynccontextmanager
async def lifespan(_app):
    # Each streamable HTTP app runs its session manager in its lifespan.
    async with contextlib.AsyncExitStack() as stack:
        for a in apps.values():
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
