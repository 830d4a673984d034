// The TypeScript SDK's MCP client (@modelcontextprotocol/sdk) in the sandbox; Node trusts
// egret's CA through NODE_EXTRA_CA_CERTS. argv: SDK prefix (its node_modules), server URL;
// MCP_TRANSPORT=sse speaks the HTTP+SSE transport (GET /sse + POST /messages) instead of
// streamable HTTP.
// Prints one line per step like mcp_client.py; a refused call prints the SDK's error. Every
// step has a deadline, so a client that would hang fails instead.
const { createRequire } = require("node:module");
// Run as a file (`node FILE PREFIX URL`) or with `node -e SRC -- PREFIX URL`.
const [prefix, url] = process.argv.slice(-2);
const sdk = createRequire(prefix + "/node_modules/");
const { Client } = sdk("@modelcontextprotocol/sdk/client/index.js");
const { StreamableHTTPClientTransport } = sdk(
  "@modelcontextprotocol/sdk/client/streamableHttp.js",
);
const { SSEClientTransport } = sdk("@modelcontextprotocol/sdk/client/sse.js");

const opts = { timeout: 15000 };

async function call(client, name, args) {
  try {
    const r = await client.callTool({ name, arguments: args }, undefined, opts);
    const text = r.content.map((c) => c.text).join(" ");
    console.log(`CALL ${name} error=${!!r.isError} ${text}`);
  } catch (e) {
    // The SDK's McpError prefixes "MCP error CODE: " to the server's message.
    const message = e.message.replace(/^MCP error -?\d+: /, "");
    console.log(`REFUSED ${name} code=${e.code} ${message}`);
  }
}

async function main() {
  const client = new Client({ name: "egret-e2e", version: "1.0.0" });
  const transport =
    process.env.MCP_TRANSPORT === "sse"
      ? new SSEClientTransport(new URL(url))
      : new StreamableHTTPClientTransport(new URL(url));
  await client.connect(transport, opts);
  console.log(`SERVER ${client.getServerVersion().name}`);
  const tools = await client.listTools(undefined, opts);
  console.log("TOOLS " + tools.tools.map((t) => t.name).sort().join(","));
  await call(client, "echo", { text: "hi" });
  await call(client, "delete_repo", { repo: "sandbox-1" });
  await call(client, "create_issue", { repo: "sandbox-7", title: "ok" });
  await call(client, "create_issue", { repo: "prod", title: "no" });
  await call(client, "echo", { text: "still alive" });
  await client.close();
  console.log("DONE");
}

main().catch((e) => {
  console.log(`FAILED ${e && e.stack ? e.stack : e}`);
  process.exit(1);
});
