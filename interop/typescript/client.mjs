// Drives mcp-sandbox with the official MCP TypeScript SDK (@modelcontextprotocol/sdk).
//
// Usage: node client.mjs MODE URL TOKEN, MODE one of
//   streamable  Streamable HTTP with a session (initialize handshake)
//   sse         the legacy HTTP+SSE transport (2024-11-05); URL ends in /sse
//   streamable-oauth  Streamable HTTP with no token given: from the 401, discover the
//               authorization server and sign in with client credentials (OAUTH_CLIENT_ID,
//               OAUTH_CLIENT_SECRET, OAUTH_ISSUER, OAUTH_SCOPE); TOKEN unused
//   stdio       launch URL (the mcp-sandbox binary) as `URL stdio`, with DATABASE_URL=TOKEN
//               in its environment (the SDK passes on only a few variables of its own)
//
// Connects, lists the tools, calls each database tool, provokes a tool error and
// disconnects. Prints one JSON line of what it saw; exits non-zero on any surprise.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { SSEClientTransport } from "@modelcontextprotocol/sdk/client/sse.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { ClientCredentialsProvider } from "@modelcontextprotocol/sdk/client/auth-extensions.js";

const EXPECTED_TOOLS = ["describe_table", "explain_query", "list_schemas", "list_tables", "query_sql"];

function check(condition, what) {
  if (!condition) throw new Error(`check failed: ${what}`);
}

async function run(mode, url, token) {
  const headers = { Authorization: `Bearer ${token}` };
  let transport;
  if (mode === "sse") {
    // The SSE transport's GET goes through eventSourceInit's fetch; its POSTs use requestInit.
    transport = new SSEClientTransport(new URL(url), {
      requestInit: { headers },
      eventSourceInit: {
        fetch: (input, init) => fetch(input, { ...init, headers: { ...init?.headers, ...headers } }),
      },
    });
  } else if (mode === "stdio") {
    transport = new StdioClientTransport({ command: url, args: ["stdio"], env: { DATABASE_URL: token } });
  } else if (mode === "streamable") {
    transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
  } else if (mode === "streamable-oauth") {
    const authProvider = new ClientCredentialsProvider({
      clientId: process.env.OAUTH_CLIENT_ID,
      clientSecret: process.env.OAUTH_CLIENT_SECRET,
      expectedIssuer: process.env.OAUTH_ISSUER,
      // The SDK asks for exactly this scope (not the challenge's).
      scope: process.env.OAUTH_SCOPE,
    });
    transport = new StreamableHTTPClientTransport(new URL(url), { authProvider });
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
  const client = new Client({ name: "mcp-sandbox-interop", version: "1.0.0" });
  await client.connect(transport);
  const seen = { mode, server: client.getServerVersion()?.name };
  if (mode.startsWith("streamable")) {
    seen.session = Boolean(transport.sessionId);
    seen.protocol_version = transport.protocolVersion;
  }

  const { tools } = await client.listTools();
  const names = tools.map((t) => t.name).sort();
  for (const name of EXPECTED_TOOLS) check(names.includes(name), `tool ${name} listed: ${names}`);
  for (const tool of tools.filter((t) => EXPECTED_TOOLS.includes(t.name))) {
    check(tool.annotations?.readOnlyHint === true, `${tool.name} readOnlyHint`);
    check(tool.annotations?.destructiveHint === false, `${tool.name} destructiveHint`);
    check(tool.outputSchema !== undefined, `${tool.name} has an outputSchema`);
  }
  seen.tools = names;

  // The SDK validates structuredContent against each tool's outputSchema.
  const listed = await client.callTool({ name: "list_tables", arguments: {} });
  check(!listed.isError, `list_tables: ${JSON.stringify(listed)}`);
  const tables = listed.structuredContent.tables.map((t) => t.name);
  check(tables.includes("customers"), `list_tables: ${tables}`);

  const described = await client.callTool({ name: "describe_table", arguments: { table: "customers" } });
  check(!described.isError, `describe_table: ${JSON.stringify(described)}`);
  const columns = described.structuredContent.columns.map((c) => c.name);
  check(JSON.stringify(columns) === JSON.stringify(["id", "email", "full_name", "country", "created_at"]), `columns: ${columns}`);

  const queried = await client.callTool({
    name: "query_sql",
    arguments: { sql: "SELECT full_name FROM customers WHERE email = 'grace@example.com'" },
  });
  check(!queried.isError, `query_sql: ${JSON.stringify(queried)}`);
  check(JSON.stringify(queried.structuredContent.rows) === JSON.stringify([["Grace Hopper"]]), "query_sql rows");
  check(
    JSON.stringify(JSON.parse(queried.content[0].text)) === JSON.stringify(queried.structuredContent),
    "text == structuredContent",
  );

  // SQL tools declared in a .sql.toml file (components/examples/shop.sql.toml), when the
  // server serves them: the SDK checks their output against the derived outputSchema.
  if (names.includes("orders_of_customer")) {
    const orders = await client.callTool({ name: "orders_of_customer", arguments: { customer_id: 1, limit: 2 } });
    check(!orders.isError, `orders_of_customer: ${JSON.stringify(orders)}`);
    const rows = orders.structuredContent.rows;
    check(rows.length === 2 && rows.every((r) => "placed_at" in r), `orders: ${JSON.stringify(rows)}`);
    const products = await client.callTool({
      name: "products_by_sku",
      arguments: { skus: ["KB-01", "x'; DROP TABLE products; --"] },
    });
    check(!products.isError, `products_by_sku: ${JSON.stringify(products)}`);
    seen.sql_tool = { orders: rows.length, products: products.structuredContent.rows.map((r) => r.sku) };
  }

  const refused = await client.callTool({ name: "query_sql", arguments: { sql: "DELETE FROM customers" } });
  check(refused.isError === true, `a write must be a tool error: ${JSON.stringify(refused)}`);
  seen.tool_error = refused.content[0].text.slice(0, 120);

  if (mode.startsWith("streamable")) await transport.terminateSession();
  await client.close();
  seen.disconnected = true;
  return seen;
}

const [mode, url, token] = process.argv.slice(2);
run(mode, url, token).then(
  (seen) => console.log(JSON.stringify(seen)),
  (error) => {
    console.error(error);
    process.exit(1);
  },
);
