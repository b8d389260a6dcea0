//! Per-caller database identity (`--caller-roles`): each caller's queries log in as the
//! Postgres role the roles file maps it to, so row-level security decides what it reads
//! (`rls.notes`: each role sees only its own notes). Static tokens by name, an OAuth
//! subject of its issuer (the real authorization server); an unmapped caller refused or
//! given the server's role, as configured; a mapped role that can write refused.

use crate::util::oauth::{AuthServer, CLIENT_ID, Format, SigningKey};
use crate::util::{Mcp, TempDir, TestServer, free_port};
use serde_json::{Value, json};

crate::trials!(caller_roles: each_caller_reads_as_its_own_role, unmapped_callers_get_the_servers_role_when_configured, an_oauth_subject_reads_as_its_role, role_pools_are_bounded_and_close_when_idle);

const ALICE: &str = "alice-token-0123456789";
const BOB: &str = "bob-token-0123456789ab";
const CAROL: &str = "carol-token-0123456789";
const WRITER: &str = "writer-token-012345678";

fn tokens_file(dir: &TempDir) -> String {
    let path = dir.path().join("tokens.toml");
    let mut text = String::new();
    for (name, token) in [
        ("alice", ALICE),
        ("bob", BOB),
        ("carol", CAROL),
        ("writer", WRITER),
    ] {
        text.push_str(&format!(
            "[[tokens]]\nname = \"{name}\"\ntoken = \"{token}\"\n\n"
        ));
    }
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn roles_file(dir: &TempDir, text: &str) -> String {
    let path = dir.path().join("roles.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

const ROLES: &str = "[[role]]\nlogin = \"rls_alice\"\ntokens = [\"alice\"]\n\n\
                     [[role]]\nlogin = \"rls_bob\"\ntokens = [\"bob\"]\n\n\
                     [[role]]\nlogin = \"rls_writer\"\ntokens = [\"writer\"]\n";

async fn server(dir: &TempDir, roles: &str) -> TestServer {
    let tokens = tokens_file(dir);
    let roles = roles_file(dir, roles);
    let url = crate::util::db::reader_url();
    let args = [
        "mcp-sandbox",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--database-url",
        &url,
        "--tokens-file",
        &tokens,
        "--caller-roles",
        &roles,
    ];
    TestServer::from_args(&args, Some(ALICE)).await
}

/// Who the caller's queries run as, and the notes it can read.
async fn reads(mcp: &mut Mcp) -> (Value, Value) {
    let who = mcp
        .structured("query_sql", json!({"sql": "SELECT current_user AS who"}))
        .await;
    let notes = mcp
        .structured(
            "query_sql",
            json!({"sql": "SELECT body FROM rls.notes ORDER BY body"}),
        )
        .await;
    (who["rows"][0][0].clone(), notes["rows"].clone())
}

async fn each_caller_reads_as_its_own_role() {
    let dir = TempDir::new();
    let server = server(&dir, ROLES).await;
    let mut alice = server.mcp_as(Some(ALICE)).await;
    let mut bob = server.mcp_as(Some(BOB)).await;
    assert_eq!(
        reads(&mut alice).await,
        (json!("rls_alice"), json!([["alice 1"], ["alice 2"]]))
    );
    assert_eq!(
        reads(&mut bob).await,
        (json!("rls_bob"), json!([["bob 1"]]))
    );
    // Interleaved, on pooled connections: still each its own.
    assert_eq!(reads(&mut alice).await.1, json!([["alice 1"], ["alice 2"]]));
    // Every tool runs as the caller: list_tables shows what its role may see.
    let tables = alice
        .structured("list_tables", json!({"schema": "rls"}))
        .await;
    assert_eq!(tables["tables"][0]["name"], "notes", "{tables}");

    // The login is the boundary: a statement cannot take another role.
    // Postgres itself refuses the switch (the guard lets set_config through): the
    // login role is not a member of bob's.
    let error = alice
        .tool_error(
            "query_sql",
            json!({"sql": "SELECT set_config('role', 'rls_bob', false)"}),
        )
        .await;
    assert!(error.contains("permission denied to set role"), "{error}");
    for sql in ["SET ROLE rls_bob", "RESET SESSION AUTHORIZATION"] {
        let response = alice.call("query_sql", json!({ "sql": sql })).await;
        let refused = response.get("error").is_some() || response["result"]["isError"] == true;
        assert!(refused, "{sql}: {response}");
    }
    assert_eq!(reads(&mut alice).await.0, json!("rls_alice"));

    // A caller the file does not map is refused before anything runs, told why.
    let mut carol = server.mcp_as(Some(CAROL)).await;
    for tool in ["query_sql", "no_such_tool"] {
        let error = carol.protocol_error(tool, json!({"sql": "SELECT 1"})).await;
        assert_eq!(error["code"], -32003, "{error}");
        assert_eq!(error["data"]["kind"], "unmapped", "{error}");
        let message = error["message"].as_str().unwrap();
        assert!(
            message.contains("token carol") && message.contains("--caller-roles"),
            "{message}"
        );
    }
    // A mapped role that can write is refused like a server role that can.
    let mut writer = server.mcp_as(Some(WRITER)).await;
    let error = writer
        .tool_error("query_sql", json!({"sql": "SELECT 1"}))
        .await;
    assert!(error.contains("can do more than read"), "{error}");
    let metrics = server.metrics().await;
    assert!(
        crate::util::metrics::count(
            &metrics,
            "mcp_tool_calls_total",
            &[("tool", "query_sql"), ("outcome", "denied")]
        ) >= 1.0,
        "{metrics}"
    );
}

async fn unmapped_callers_get_the_servers_role_when_configured() {
    let dir = TempDir::new();
    let server = server(&dir, &format!("unmapped = \"default\"\n{ROLES}")).await;
    let mut carol = server.mcp_as(Some(CAROL)).await;
    // The server's reader: no note is its own.
    assert_eq!(
        reads(&mut carol).await,
        (json!(mcp_sandbox::demo::READER_ROLE), json!([]))
    );
    let mut bob = server.mcp_as(Some(BOB)).await;
    assert_eq!(reads(&mut bob).await.1, json!([["bob 1"]]));
}

async fn an_oauth_subject_reads_as_its_role() {
    let port = free_port();
    let resource = format!("http://127.0.0.1:{port}/mcp");
    let key = SigningKey::es256("es256-roles");
    let auth = AuthServer::start(&resource, Format::Jwt, std::slice::from_ref(&key)).await;
    let dir = TempDir::new();
    // The subject of this issuer maps to alice's role; the same subject of another
    // issuer would not.
    let roles = roles_file(
        &dir,
        &format!(
            "[[role]]\nlogin = \"rls_alice\"\noauth = [{{ issuer = \"{}\", subject = \"{CLIENT_ID}\" }}]\n\n\
             [[role]]\nlogin = \"rls_bob\"\noauth = [{{ issuer = \"https://elsewhere.example\", subject = \"{CLIENT_ID}\" }}]\n",
            auth.issuer
        ),
    );
    let server = crate::oauth::resource_server(&auth, port, &["--caller-roles", &roles]).await;
    let token = auth.token("mcp:tools").await;
    crate::oauth::until_keys_known(&server, &token).await;
    let mut mcp = server.mcp_as(Some(&token)).await;
    assert_eq!(
        reads(&mut mcp).await,
        (json!("rls_alice"), json!([["alice 1"], ["alice 2"]]))
    );
}

/// Backends logged in as `role`, as Postgres counts them.
async fn backends_of(role: &str) -> i64 {
    let client = crate::util::db::superuser().await;
    let row = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )
        .await
        .unwrap();
    row.get(0)
}

/// Polls until `role` has `want` backends.
async fn until_backends(role: &str, want: i64) {
    let started = std::time::Instant::now();
    loop {
        let now = backends_of(role).await;
        if now == want {
            return;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{role} still has {now} backends, not {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn role_pools_are_bounded_and_close_when_idle() {
    let dir = TempDir::new();
    let mapping = "[[role]]\nlogin = \"rls_pooled_a\"\ntokens = [\"alice\"]\n\n\
                   [[role]]\nlogin = \"rls_pooled_b\"\ntokens = [\"bob\"]\n";
    // One role pool at a time, one connection each, none closed for being idle.
    let server_one = server(
        &dir,
        &format!("max_pools = 1\npool_size = 1\nidle_close = \"1h\"\n{mapping}"),
    )
    .await;
    let mut alice = server_one.mcp_as(Some(ALICE)).await;
    let mut bob = server_one.mcp_as(Some(BOB)).await;
    assert_eq!(reads(&mut alice).await.0, json!("rls_pooled_a"));
    assert_eq!(backends_of("rls_pooled_a").await, 1);
    // Bob's pool takes the one place: alice's, which no call holds, is closed for it.
    assert_eq!(reads(&mut bob).await.0, json!("rls_pooled_b"));
    until_backends("rls_pooled_a", 0).await;
    assert_eq!(backends_of("rls_pooled_b").await, 1);
    drop((alice, bob, server_one));
    until_backends("rls_pooled_b", 0).await;

    // Closed after 300 ms unused, with no call to close it; opened again when needed.
    let server_two = server(&dir, &format!("idle_close = \"300ms\"\n{mapping}")).await;
    let mut alice = server_two.mcp_as(Some(ALICE)).await;
    assert_eq!(reads(&mut alice).await.0, json!("rls_pooled_a"));
    until_backends("rls_pooled_a", 0).await;
    assert_eq!(reads(&mut alice).await.0, json!("rls_pooled_a"));
}
