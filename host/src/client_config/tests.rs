//! Every client's snippet, both forms, parsed back and checked against the keys that
//! client documents.

use super::*;

const COMMAND: &str = "/opt/mcp sandbox/bin/mcp-sandbox";
const URL: &str = "https://db-tools.example.com/mcp";

fn stdio() -> Form {
    Form::Stdio {
        command: COMMAND.into(),
        database_url_env: "DATABASE_URL".into(),
    }
}

fn http() -> Form {
    Form::Http {
        url: URL.into(),
        token_env: "MCP_SANDBOX_TOKEN".into(),
    }
}

fn json_of(client: Client, form: &Form) -> Value {
    let snippet = render(client, "pg", form).unwrap();
    serde_json::from_str(&snippet.text)
        .unwrap_or_else(|e| panic!("{client:?}: {e}\n{}", snippet.text))
}

/// The JSON inside `claude mcp add-json pg '…'`, unquoted as a POSIX shell would.
fn claude_code_json(form: &Form) -> Value {
    let text = render(Client::ClaudeCode, "pg", form).unwrap().text;
    let quoted = text
        .strip_suffix('\n')
        .and_then(|t| t.strip_prefix("claude mcp add-json pg "))
        .expect(&text);
    let inner = quoted
        .strip_prefix('\'')
        .and_then(|q| q.strip_suffix('\''))
        .expect(&text)
        .replace("'\\''", "'");
    serde_json::from_str(&inner).expect(&inner)
}

#[test]
fn stdio_forms_launch_the_binary_with_the_url_referenced() {
    let launch = |server: &Value| {
        assert_eq!(server["command"], COMMAND, "{server}");
        assert_eq!(server["args"], json!(["stdio"]), "{server}");
    };
    let desktop = json_of(Client::ClaudeDesktop, &stdio());
    launch(&desktop["mcpServers"]["pg"]);
    assert_eq!(
        desktop["mcpServers"]["pg"]["env"]["DATABASE_URL"],
        URL_PLACEHOLDER
    );

    let code = claude_code_json(&stdio());
    launch(&code);
    assert_eq!(code["type"], "stdio");
    assert_eq!(code["env"]["DATABASE_URL"], "${DATABASE_URL}");

    for client in [Client::Cursor, Client::Windsurf] {
        let server = &json_of(client, &stdio())["mcpServers"]["pg"];
        launch(server);
        assert_eq!(server["env"]["DATABASE_URL"], "${env:DATABASE_URL}");
    }

    let vscode = json_of(Client::Vscode, &stdio());
    launch(&vscode["servers"]["pg"]);
    assert_eq!(vscode["servers"]["pg"]["type"], "stdio");
    assert_eq!(
        vscode["servers"]["pg"]["env"]["DATABASE_URL"],
        "${input:database-url}"
    );
    assert_eq!(vscode["inputs"][0]["id"], "database-url");
    assert_eq!(vscode["inputs"][0]["password"], true);

    let zed = json_of(Client::Zed, &stdio());
    launch(&zed["context_servers"]["pg"]);

    let gemini = json_of(Client::Gemini, &stdio());
    launch(&gemini["mcpServers"]["pg"]);
    assert_eq!(
        gemini["mcpServers"]["pg"]["env"]["DATABASE_URL"],
        "$DATABASE_URL"
    );

    let codex: toml::Table = render(Client::Codex, "pg", &stdio())
        .unwrap()
        .text
        .parse()
        .unwrap();
    let server = &codex["mcp_servers"]["pg"];
    assert_eq!(server["command"].as_str(), Some(COMMAND));
    assert_eq!(
        server["args"].as_array().unwrap()[0].as_str(),
        Some("stdio")
    );
    assert_eq!(
        server["env_vars"].as_array().unwrap()[0].as_str(),
        Some("DATABASE_URL")
    );

    let goose = render(Client::Goose, "pg", &stdio()).unwrap().text;
    for line in [
        "extensions:",
        "  \"pg\":",
        "    type: stdio",
        &format!("    cmd: \"{COMMAND}\""),
        "    args: [stdio]",
        "    enabled: true",
    ] {
        assert!(goose.lines().any(|l| l == line), "{line:?} in\n{goose}");
    }
}

#[test]
fn http_forms_reference_the_token_and_never_hold_it() {
    let code = claude_code_json(&http());
    assert_eq!(code["type"], "http");
    assert_eq!(code["url"], URL);
    assert_eq!(
        code["headers"]["Authorization"],
        "Bearer ${MCP_SANDBOX_TOKEN}"
    );

    let cursor = &json_of(Client::Cursor, &http())["mcpServers"]["pg"];
    assert_eq!(cursor["url"], URL);
    assert_eq!(
        cursor["headers"]["Authorization"],
        "Bearer ${env:MCP_SANDBOX_TOKEN}"
    );

    // Windsurf names it serverUrl; Gemini CLI httpUrl (its `url` is the SSE transport).
    let windsurf = &json_of(Client::Windsurf, &http())["mcpServers"]["pg"];
    assert_eq!(windsurf["serverUrl"], URL);
    assert!(windsurf.get("url").is_none());
    let gemini = &json_of(Client::Gemini, &http())["mcpServers"]["pg"];
    assert_eq!(gemini["httpUrl"], URL);
    assert!(gemini.get("url").is_none());
    assert_eq!(
        gemini["headers"]["Authorization"],
        "Bearer $MCP_SANDBOX_TOKEN"
    );

    let vscode = json_of(Client::Vscode, &http());
    assert_eq!(vscode["servers"]["pg"]["type"], "http");
    assert_eq!(
        vscode["servers"]["pg"]["headers"]["Authorization"],
        "Bearer ${input:mcp-sandbox-token}"
    );
    assert_eq!(vscode["inputs"][0]["password"], true);

    let codex: toml::Table = render(Client::Codex, "pg", &http())
        .unwrap()
        .text
        .parse()
        .unwrap();
    assert_eq!(codex["mcp_servers"]["pg"]["url"].as_str(), Some(URL));
    assert_eq!(
        codex["mcp_servers"]["pg"]["bearer_token_env_var"].as_str(),
        Some("MCP_SANDBOX_TOKEN")
    );

    // No expansion known: a placeholder, and a note saying so.
    let zed = render(Client::Zed, "pg", &http()).unwrap();
    assert!(zed.text.contains("Bearer YOUR_TOKEN"), "{}", zed.text);
    assert!(zed.notes[0].contains("YOUR_TOKEN"), "{:?}", zed.notes);
    let goose = render(Client::Goose, "pg", &http()).unwrap();
    assert!(
        goose.text.contains("type: streamable_http"),
        "{}",
        goose.text
    );
    assert!(
        goose.text.contains(&format!("uri: \"{URL}\"")),
        "{}",
        goose.text
    );

    let desktop = render(Client::ClaudeDesktop, "pg", &http()).unwrap_err();
    assert!(desktop.contains("stdio"), "{desktop}");
}

/// What a user controls (the path, the URL, the variable's name) cannot break out of
/// its string in any format.
#[test]
fn hostile_paths_and_urls_stay_strings() {
    let odd = "/tmp/it's \"quoted\"\n$(rm -rf ~)/mcp-sandbox";
    let form = Form::Stdio {
        command: odd.into(),
        database_url_env: "DATABASE_URL".into(),
    };
    for client in [
        Client::ClaudeDesktop,
        Client::Cursor,
        Client::Vscode,
        Client::Zed,
    ] {
        let text = render(client, "pg", &form).unwrap().text;
        let parsed: Value = serde_json::from_str(&text).unwrap();
        assert!(parsed.to_string().contains("rm -rf"), "{client:?}");
    }
    let code = claude_code_json(&form);
    assert_eq!(code["command"], odd);
    let codex: toml::Table = render(Client::Codex, "pg", &form)
        .unwrap()
        .text
        .parse()
        .unwrap();
    assert_eq!(codex["mcp_servers"]["pg"]["command"].as_str(), Some(odd));
    assert!(valid_name("pg-main_2"));
    for bad in [
        "", "a b", "x]\n[y", "a'b", "é", "-x", "--help", "-", "1st", "_x",
    ] {
        assert!(!valid_name(bad), "{bad:?}");
    }
    assert!(valid_variable("DATABASE_URL") && valid_variable("_PG"));
    for bad in ["A-B", "1X", "", "A B", "$A", "A}"] {
        assert!(!valid_variable(bad), "{bad:?}");
    }
    // A name YAML would read as another type stays a string in Goose's file.
    let goose = render(Client::Goose, "true", &form).unwrap().text;
    assert!(
        goose.contains("  \"true\":\n    name: \"true\"\n"),
        "{goose}"
    );
}

#[test]
fn the_demo_form_launches_the_demo_with_postgres_found() {
    let demo = Form::Demo {
        command: COMMAND.into(),
        pg_bin: "/usr/lib/postgresql/15/bin".into(),
    };
    let desktop = json_of(Client::ClaudeDesktop, &demo);
    let server = &desktop["mcpServers"]["pg"];
    assert_eq!(server["command"], COMMAND);
    assert_eq!(server["args"], json!(["demo", "--stdio"]));
    assert_eq!(
        server["env"]["MCP_SANDBOX_PG_BIN"],
        "/usr/lib/postgresql/15/bin"
    );
    assert!(
        render(Client::ClaudeDesktop, "pg", &demo)
            .unwrap()
            .notes
            .is_empty()
    );
    let codex: toml::Table = render(Client::Codex, "pg", &demo)
        .unwrap()
        .text
        .parse()
        .unwrap();
    let server = &codex["mcp_servers"]["pg"];
    assert_eq!(server["args"].as_array().unwrap().len(), 2);
    assert_eq!(
        server["env"]["MCP_SANDBOX_PG_BIN"].as_str(),
        Some("/usr/lib/postgresql/15/bin")
    );
    assert_eq!(claude_code_json(&demo)["type"], "stdio");
}

/// Every printed form, whole, against `client_config/snapshots.txt`: a change to any
/// snippet shows in review as a diff of what users paste. `UPDATE_SNAPSHOTS=1` rewrites
/// the file (then read the diff against each client's documentation).
#[test]
fn every_form_matches_its_snapshot() {
    let demo = Form::Demo {
        command: COMMAND.into(),
        pg_bin: "/usr/lib/postgresql/15/bin".into(),
    };
    let mut all = String::new();
    for (label, form) in [("stdio", stdio()), ("http", http()), ("demo", demo)] {
        for client in Client::ALL {
            all.push_str(&format!("=== {client:?} {label}\n"));
            match render(client, "pg", &form) {
                Ok(snippet) => {
                    all.push_str(&snippet.text);
                    for note in snippet.notes {
                        all.push_str(&format!("note: {note}\n"));
                    }
                }
                Err(why) => all.push_str(&format!("refused: {why}\n")),
            }
        }
    }
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/client_config/snapshots.txt");
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &all).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == all,
        "client-config output differs from {} (UPDATE_SNAPSHOTS=1 rewrites it):\n{all}",
        path.display()
    );
}
