// A Claude-Code-like client on the official MCP TypeScript SDK (@modelcontextprotocol/sdk):
// one session kept for the whole run (a 404 ends it for good, as in Claude Code, which
// never re-initializes), the session's GET stream open (the SDK opens it after
// initialization and reconnects it with Last-Event-ID), and a `query_sql` call every
// STEP_MS (100) until the file STOP_FILE exists. Each call's outcome is printed as a line
// as it happens; the last line sums up.
//
// Usage: node long_session.mjs URL TOKEN STOP_FILE
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { existsSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";

const [url, token, stopFile] = process.argv.slice(2);
const step = Number(process.env.STEP_MS ?? 100);

const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});
const client = new Client({ name: "claude-code-like", version: "1.0.0" });
const transportErrors = [];
client.onerror = (error) => {
  transportErrors.push(String(error?.message ?? error).slice(0, 200));
};
await client.connect(transport);
const session = transport.sessionId;

let calls = 0;
let ok = 0;
const errors = [];
while (!existsSync(stopFile)) {
  calls += 1;
  const n = calls;
  try {
    const result = await client.callTool(
      { name: "query_sql", arguments: { sql: `SELECT ${n} AS n` } },
      undefined,
      { timeout: 30000 },
    );
    const rows = JSON.stringify(result.structuredContent?.rows);
    if (result.isError || rows !== JSON.stringify([[n]])) {
      errors.push({ n, code: null, message: `unexpected result: ${JSON.stringify(result).slice(0, 200)}` });
      console.log(JSON.stringify({ n, ok: false, code: null }));
    } else {
      ok += 1;
      console.log(JSON.stringify({ n, ok: true }));
    }
  } catch (error) {
    const code = error.code ?? null;
    errors.push({ n, code, message: String(error.message ?? error).slice(0, 300) });
    console.log(JSON.stringify({ n, ok: false, code }));
    // Claude Code drops a session for good on a 404: so does this client.
    if (code === 404) break;
  }
  await sleep(step);
}
const kept = transport.sessionId === session;
await transport.terminateSession().catch(() => {});
await client.close();
console.log(JSON.stringify({ summary: true, session: Boolean(session), kept, calls, ok, errors, transportErrors }));
