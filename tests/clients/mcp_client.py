# The Python SDK's MCP client in the sandbox, trusting egret's CA. argv: CA file, server URL,
# transport ("http": streamable HTTP, "sse": HTTP+SSE). Prints one line per step; a refused
# call prints the MCP error the SDK raised. Every step has a deadline, so a client that would
# hang fails instead.
import asyncio
import ssl
import sys

import anyio
import httpx
from mcp import ClientSession
from mcp.shared.exceptions import McpError

ca, url, transport = sys.argv[1:4]
ctx = ssl.create_default_context(cafile=ca)


def client_factory(headers=None, timeout=None, auth=None):
    return httpx.AsyncClient(
        headers=headers, timeout=timeout or httpx.Timeout(15), auth=auth, verify=ctx
    )


async def call(session, tool, args):
    try:
        with anyio.fail_after(15):
            r = await session.call_tool(tool, args)
        text = " ".join(c.text for c in r.content if hasattr(c, "text"))
        print(f"CALL {tool} error={r.isError} {text}", flush=True)
    except McpError as e:
        print(f"REFUSED {tool} code={e.error.code} {e.error.message}", flush=True)


async def main():
    if transport == "sse":
        from mcp.client.sse import sse_client

        streams = sse_client(url, httpx_client_factory=client_factory)
    else:
        from mcp.client.streamable_http import streamablehttp_client

        streams = streamablehttp_client(url, httpx_client_factory=client_factory)
    async with streams as s:
        read, write = s[0], s[1]
        async with ClientSession(read, write) as session:
            with anyio.fail_after(15):
                init = await session.initialize()
            print(f"SERVER {init.serverInfo.name}", flush=True)
            with anyio.fail_after(15):
                tools = await session.list_tools()
            print("TOOLS " + ",".join(sorted(t.name for t in tools.tools)), flush=True)
            await call(session, "echo", {"text": "hi"})
            await call(session, "delete_repo", {"repo": "sandbox-1"})
            await call(session, "create_issue", {"repo": "sandbox-7", "title": "ok"})
            await call(session, "create_issue", {"repo": "prod", "title": "no"})
            await call(session, "echo", {"text": "still alive"})
    print("DONE", flush=True)


try:
    asyncio.run(main())
except BaseException as e:  # print what failed, for the test's message
    import traceback

    traceback.print_exc()
    print(f"FAILED {type(e).__name__}: {e}", flush=True)
    sys.exit(1)
