"""Drives mcp-sandbox with the official MCP Python SDK (`mcp` on PyPI).

Usage: client.py MODE URL TOKEN, MODE one of
  streamable-legacy  Streamable HTTP, initialize handshake (2025-era sessions)
  streamable-auto    Streamable HTTP, server/discover probe (2026-07-28, stateless)
  sse                the legacy HTTP+SSE transport (2024-11-05); URL ends in /sse
  streamable-oauth   Streamable HTTP with no token given: from the 401, discover the
                     authorization server and sign in with client credentials
                     (OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET, OAUTH_ISSUER, OAUTH_SCOPE);
                     TOKEN unused
  stdio-legacy       stdio: launch URL (the mcp-sandbox binary) as `URL stdio`, with
  stdio-auto         DATABASE_URL=TOKEN in its environment (the SDK passes on only a
                     few variables of its own); initialize, or server/discover first

Connects, lists the tools, calls each database tool, provokes a tool error and
disconnects. Prints one JSON line of what it saw; exits non-zero on any surprise.
"""

import asyncio
import json
import sys

from mcp.client import Client
from mcp.client.sse import sse_client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

import os

EXPECTED_TOOLS = {"describe_table", "explain_query", "list_schemas", "list_tables", "query_sql"}


def check(condition, what):
    if not condition:
        raise AssertionError(what)


class MemoryStorage:
    """Where the SDK's OAuth provider keeps its tokens: in memory, for one run."""

    def __init__(self):
        self.tokens = None
        self.client_info = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info


async def run(mode, url, token):
    headers = {"Authorization": f"Bearer {token}"}
    if mode == "streamable-oauth":
        from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider

        auth = ClientCredentialsOAuthProvider(
            server_url=url,
            storage=MemoryStorage(),
            client_id=os.environ["OAUTH_CLIENT_ID"],
            client_secret=os.environ["OAUTH_CLIENT_SECRET"],
            issuer=os.environ["OAUTH_ISSUER"],
            scope=os.environ.get("OAUTH_SCOPE"),
        )
        http = create_mcp_http_client(auth=auth)
        transport = streamable_http_client(url, http_client=http)
        connect_mode = "legacy"
    elif mode.startswith("stdio-"):
        server = StdioServerParameters(command=url, args=["stdio"], env={"DATABASE_URL": token})
        transport = stdio_client(server)
        connect_mode = mode.removeprefix("stdio-")
    elif mode == "sse":
        transport = sse_client(url, headers=headers)
        connect_mode = "legacy"
    else:
        http = create_mcp_http_client(headers=headers)
        transport = streamable_http_client(url, http_client=http)
        connect_mode = "legacy" if mode == "streamable-legacy" else "auto"

    seen = {"mode": mode}
    async with Client(transport, mode=connect_mode) as client:
        seen["protocol_version"] = client.session.protocol_version
        tools = (await client.list_tools()).tools
        names = {tool.name for tool in tools}
        check(EXPECTED_TOOLS <= names, f"tools listed: {sorted(names)}")
        for tool in tools:
            if tool.name in EXPECTED_TOOLS:
                check(tool.annotations is not None, f"{tool.name} has annotations")
                check(tool.annotations.read_only_hint is True, f"{tool.name} readOnlyHint")
                check(tool.annotations.destructive_hint is False, f"{tool.name} destructiveHint")
                check(tool.output_schema is not None, f"{tool.name} has an outputSchema")
        seen["tools"] = sorted(names)

        listed = await client.call_tool("list_tables", {})
        check(not listed.is_error, f"list_tables failed: {listed}")
        tables = [t["name"] for t in listed.structured_content["tables"]]
        check("customers" in tables, f"list_tables: {tables}")

        described = await client.call_tool("describe_table", {"table": "customers"})
        check(not described.is_error, f"describe_table failed: {described}")
        columns = [c["name"] for c in described.structured_content["columns"]]
        check(
            columns == ["id", "email", "full_name", "country", "created_at"],
            f"describe_table columns: {columns}",
        )

        queried = await client.call_tool(
            "query_sql", {"sql": "SELECT full_name FROM customers WHERE email = 'grace@example.com'"}
        )
        check(not queried.is_error, f"query_sql failed: {queried}")
        check(queried.structured_content["rows"] == [["Grace Hopper"]], f"query_sql rows: {queried}")
        # The text rendering carries the same result as the structured content.
        check(
            json.loads(queried.content[0].text) == queried.structured_content,
            "text == structuredContent",
        )

        # SQL tools declared in a .sql.toml file (components/examples/shop.sql.toml), when
        # the server serves them: called like any tool, their output checked by the SDK
        # against the outputSchema derived from the result columns.
        if "orders_of_customer" in names:
            orders = await client.call_tool("orders_of_customer", {"customer_id": 1, "limit": 2})
            check(not orders.is_error, f"orders_of_customer failed: {orders}")
            rows = orders.structured_content["rows"]
            check(len(rows) == 2 and all("placed_at" in r for r in rows), f"orders: {rows}")
            products = await client.call_tool(
                "products_by_sku", {"skus": ["KB-01", "x'; DROP TABLE products; --"]}
            )
            check(not products.is_error, f"products_by_sku failed: {products}")
            seen["sql_tool"] = {
                "orders": len(rows),
                "products": [r["sku"] for r in products.structured_content["rows"]],
            }

        refused = await client.call_tool("query_sql", {"sql": "DELETE FROM customers"})
        check(refused.is_error, f"a write must be a tool error: {refused}")
        seen["tool_error"] = refused.content[0].text[:120]
    seen["disconnected"] = True
    return seen


def main():
    mode, url, token = sys.argv[1:4]
    seen = asyncio.run(run(mode, url, token))
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
