"""The same three tools as mcp-sandbox's built-in components, served the way a Python user
would write them: the official MCP SDK's MCPServer (stateless Streamable HTTP, JSON
answers, uvicorn) and a psycopg 3 connection pool whose transactions are read-only.

The load bench (host/benches/load.rs, `MCP_SANDBOX_BENCH_ONLY=python`) starts it and
sends it the same `tools/call` requests it sends mcp-sandbox. It runs the components'
own catalog statements (passed in `LIST_SQL` and `DESCRIBE_SQL`), so the comparison is
of the servers, not of the SQL, and answers with the same keys. What it leaves out: no
authentication, no quoted or qualified names in `describe_table`, no SQL guard beyond
the read-only transaction, no row or byte caps beyond 1000 rows, no metrics or audit.
Environment: DATABASE_URL, PORT, POOL_SIZE.
"""

import json
import os
import re
from contextlib import asynccontextmanager

from mcp.server.mcpserver import MCPServer
from psycopg_pool import AsyncConnectionPool

MAX_ROWS = 1000


def placeholders(sql: str) -> str:
    """`$1` (Postgres) to `%(p1)s` (psycopg)."""
    return re.sub(r"\$(\d+)", r"%(p\1)s", sql.replace("%", "%%"))


LIST_SQL = placeholders(os.environ["LIST_SQL"])
DESCRIBE_SQL = placeholders(os.environ["DESCRIBE_SQL"])


async def read_only(conn):
    await conn.set_read_only(True)


pool = AsyncConnectionPool(
    os.environ["DATABASE_URL"],
    min_size=int(os.environ.get("POOL_SIZE", "16")),
    max_size=int(os.environ.get("POOL_SIZE", "16")),
    configure=read_only,
    open=False,
)


@asynccontextmanager
async def lifespan(_server):
    await pool.open(wait=True)
    try:
        yield {}
    finally:
        await pool.close()


# ERROR, as the bench runs mcp-sandbox (RUST_LOG=error): no access log line per call.
server = MCPServer("python-bench", lifespan=lifespan, log_level="ERROR")


async def fetch(sql: str, params=None, limit: int = MAX_ROWS):
    async with pool.connection() as conn:
        cur = await conn.execute(sql, params)
        columns = [(c.name, c.type_display) for c in cur.description or []]
        rows = await cur.fetchmany(limit + 1)
        # Ends the read-only transaction. Not rollback(): psycopg forgets the connection's
        # prepared statements on a rollback, and every call would be planned afresh.
        await conn.commit()
    return columns, rows


def plain(value):
    """A JSON value for a cell psycopg decoded."""
    if value is None or isinstance(value, (bool, int, float, str, list, dict)):
        return value
    return str(value)


@server.tool()
async def list_tables(
    schema: str = "public",
    pattern: str | None = None,
    limit: int = 200,
    cursor: str | None = None,
) -> dict:
    """List the tables and views in a schema with kind, comment and estimated rows."""
    _, rows = await fetch(
        LIST_SQL, {"p1": schema, "p2": pattern, "p3": cursor, "p4": limit}, limit
    )
    tables = [
        {"name": r[0], "kind": r[1], "comment": r[2], "rows_estimate": r[3]}
        for r in rows[:limit]
        if r[0] is not None
    ]
    more = len(rows) > limit
    return {
        "schema": schema,
        "tables": tables,
        "next_cursor": tables[-1]["name"] if more else None,
    }


@server.tool()
async def describe_table(table: str, schema: str = "public") -> dict:
    """Describe a table or view: columns, primary key, unique constraints, foreign keys."""
    _, rows = await fetch(
        DESCRIBE_SQL, {"p1": schema, "p2": False, "p3": table, "p4": False}, 2
    )
    if not rows:
        raise ValueError(f'table "{schema}.{table}" does not exist')
    row = rows[0]
    if not row[4] and len(rows) > 1:
        raise ValueError(f'"{table}" is ambiguous; quote the name for an exact match')
    constraints = row[6] if isinstance(row[6], list) else json.loads(row[6] or "[]")
    return {
        "schema": row[0],
        "table": row[1],
        "kind": row[2],
        "comment": row[3],
        "columns": row[5] if isinstance(row[5], list) else json.loads(row[5] or "[]"),
        "primary_key": next(
            (c["columns"] for c in constraints if c["type"] == "p"), None
        ),
        "unique": [
            {"name": c["name"], "columns": c["columns"]}
            for c in constraints
            if c["type"] == "u"
        ],
        "foreign_keys": [
            {"name": c["name"], "columns": c["columns"], "references": c["references"]}
            for c in constraints
            if c["type"] == "f"
        ],
    }


@server.tool()
async def query_sql(sql: str) -> dict:
    """Run one read-only SQL statement; at most 1000 rows."""
    columns, rows = await fetch(sql)
    rows = [[plain(v) for v in r] for r in rows[: MAX_ROWS + 1]]
    return {
        "columns": [{"name": n, "type": t} for n, t in columns],
        "row_count": min(len(rows), MAX_ROWS),
        "rows": rows[:MAX_ROWS],
        "truncated": len(rows) > MAX_ROWS,
    }


if __name__ == "__main__":
    server.run(
        "streamable-http",
        host="127.0.0.1",
        port=int(os.environ["PORT"]),
        stateless_http=True,
        json_response=True,
    )
