// Drives agentvault's MCP server with the official TypeScript SDK's client,
// over streamable HTTP (AV_URL/mcp) and over stdio (AV_BIN mcp), and prints
// one JSON line per transport with what it saw. The Go test
// TestMCPWithTheTypeScriptClient runs it and checks the lines. The SDK's
// client validates every tool result against the tool's output schema.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const env = process.env;
const transports = {
  http: () => new StreamableHTTPClientTransport(new URL(env.AV_URL + "/mcp"), {
    requestInit: { headers: { Authorization: `Bearer ${env.AV_TOKEN}` } },
  }),
  stdio: () => new StdioClientTransport({
    command: env.AV_BIN, args: ["mcp"],
    env: { ...env, AGENTVAULT_URL: env.AV_URL, AGENTVAULT_TOKEN: env.AV_TOKEN },
    stderr: "ignore",
  }),
};

for (const [name, make] of Object.entries(transports)) {
  const client = new Client({ name: "ts-sdk-check", version: "1.0.0" });
  await client.connect(make());
  const { tools } = await client.listTools();
  const out = { transport: name, tools: tools.map((t) => ({
    name: t.name,
    input: t.inputSchema?.type, output: t.outputSchema?.type,
    readOnly: t.annotations?.readOnlyHint ?? false, openWorld: t.annotations?.openWorldHint,
  })) };
  out.collections = (await client.callTool({ name: "list_collections", arguments: { purpose: env.AV_PURPOSE } })).structuredContent;
  out.record = (await client.callTool({ name: "get_record", arguments: { collection: env.AV_COLLECTION, id: env.AV_RECORD, purpose: env.AV_PURPOSE } })).structuredContent;
  out.reveal = (await client.callTool({ name: "detokenize", arguments: { tokens: [env.AV_REVEAL], purpose: env.AV_PURPOSE } })).structuredContent;
  const refused = await client.callTool({ name: "get_record", arguments: { collection: env.AV_COLLECTION, id: env.AV_RECORD, purpose: "not-my-purpose" } });
  out.refused = { isError: refused.isError, text: refused.content?.[0]?.text };
  console.log(JSON.stringify(out));
  await client.close();
}
