//! `mcp-sandbox client-config`: the configuration each MCP client reads, in its own
//! shape (key names, file, expansion syntax), for the stdio form (the client launches
//! this binary) or the HTTP form (a running server's URL). Secrets are referenced, never
//! written: the token by an environment variable or the client's password prompt, the
//! database URL likewise where the client expands variables, else a placeholder to fill.
//! Pure renderers; the command prints them.

use crate::config::{Client, ClientConfigArgs};
use serde_json::{Value, json};
use std::path::PathBuf;

/// How the client reaches the server.
#[derive(Clone, Debug)]
pub enum Form {
    /// The client launches `command stdio`; the database URL comes from the variable
    /// `database_url_env` where the client expands variables.
    Stdio {
        command: String,
        database_url_env: String,
    },
    /// A running server at `url`; the token is in the variable `token_env`.
    Http { url: String, token_env: String },
    /// The client launches `command demo --stdio` (a throwaway database; nothing
    /// secret), told where PostgreSQL's server binaries are: desktop applications do
    /// not search the shell's `PATH`.
    Demo { command: String, pg_bin: String },
}

/// A snippet to use as is, and what the user must still do (empty when nothing).
#[derive(Debug)]
pub struct Snippet {
    pub text: String,
    pub notes: Vec<String>,
}

/// What a client without variable expansion gets for the database URL.
pub const URL_PLACEHOLDER: &str = "postgres://USER:PASSWORD@HOST:5432/DATABASE";

/// Renders `client`'s configuration for a server called `name`, or says why the client
/// cannot take that form.
pub fn render(client: Client, name: &str, form: &Form) -> Result<Snippet, String> {
    let mut notes = Vec::new();
    let text = match form {
        Form::Demo { command, pg_bin } => render_demo(client, name, command, pg_bin),
        Form::Stdio {
            command,
            database_url_env: var,
        } => {
            let stdio = |url: String| json!({"command": command, "args": ["stdio"], "env": {"DATABASE_URL": url}});
            let mut placeholder = || {
                notes.push(format!(
                    "replace {URL_PLACEHOLDER} with your database URL: this client does not \
                     expand environment variables there, and its file then holds the password"
                ));
                URL_PLACEHOLDER.to_owned()
            };
            match client {
                Client::ClaudeDesktop => {
                    pretty(&json!({"mcpServers": {name: stdio(placeholder())}}))
                }
                Client::ClaudeCode => {
                    let mut server = stdio(format!("${{{var}}}"));
                    server["type"] = json!("stdio");
                    notes.push(format!(
                        "Claude Code expands ${{{var}}} when it starts the server: export {var} \
                         in the shell that runs it"
                    ));
                    claude_add(name, &server)
                }
                Client::Cursor | Client::Windsurf => {
                    pretty(&json!({"mcpServers": {name: stdio(format!("${{env:{var}}}"))}}))
                }
                Client::Vscode => {
                    let mut server = stdio("${input:database-url}".into());
                    server["type"] = json!("stdio");
                    pretty(&json!({
                        "inputs": [{
                            "type": "promptString",
                            "id": "database-url",
                            "description": "PostgreSQL URL for mcp-sandbox",
                            "password": true
                        }],
                        "servers": {name: server}
                    }))
                }
                Client::Zed => pretty(&json!({"context_servers": {name: stdio(placeholder())}})),
                Client::Codex => {
                    notes.push(format!("Codex passes {var} on from its own environment"));
                    format!(
                        "[mcp_servers.{name}]\ncommand = {}\nargs = [\"stdio\"]\nenv_vars = [{}]\n",
                        toml_string(command),
                        toml_string(var)
                    )
                }
                Client::Gemini => pretty(&json!({"mcpServers": {name: stdio(format!("${var}"))}})),
                Client::Goose => goose(
                    name,
                    "stdio",
                    &format!(
                        "    cmd: {}\n    args: [stdio]\n    envs:\n      DATABASE_URL: {}\n",
                        json_string(command),
                        json_string(&placeholder()),
                    ),
                ),
            }
        }
        Form::Http {
            url,
            token_env: var,
        } => {
            let bearer = |reference: String| format!("Bearer {reference}");
            let mut pasted = || {
                notes.push(format!(
                    "replace YOUR_TOKEN with the token ({var}): this client does not expand \
                     environment variables in headers, or the stdio form keeps it out of the file"
                ));
                bearer("YOUR_TOKEN".into())
            };
            match client {
                Client::ClaudeDesktop => {
                    return Err(
                        "Claude Desktop reads only stdio servers from its file: use the \
                                stdio form, or add a public HTTPS server under Settings → \
                                Connectors"
                            .into(),
                    );
                }
                Client::ClaudeCode => {
                    let server = json!({"type": "http", "url": url,
                        "headers": {"Authorization": bearer(format!("${{{var}}}"))}});
                    notes.push(format!(
                        "Claude Code expands ${{{var}}} when it connects: export {var} in the \
                         shell that runs it"
                    ));
                    claude_add(name, &server)
                }
                Client::Cursor => pretty(&json!({"mcpServers": {name: {"url": url,
                    "headers": {"Authorization": bearer(format!("${{env:{var}}}"))}}}})),
                Client::Windsurf => pretty(&json!({"mcpServers": {name: {"serverUrl": url,
                    "headers": {"Authorization": bearer(format!("${{env:{var}}}"))}}}})),
                Client::Vscode => pretty(&json!({
                    "inputs": [{
                        "type": "promptString",
                        "id": "mcp-sandbox-token",
                        "description": "mcp-sandbox token",
                        "password": true
                    }],
                    "servers": {name: {"type": "http", "url": url,
                        "headers": {"Authorization": "Bearer ${input:mcp-sandbox-token}"}}}
                })),
                Client::Zed => pretty(&json!({"context_servers": {name: {"url": url,
                    "headers": {"Authorization": pasted()}}}})),
                Client::Codex => format!(
                    "[mcp_servers.{name}]\nurl = {}\nbearer_token_env_var = {}\n",
                    toml_string(url),
                    toml_string(var)
                ),
                // `url` means the legacy SSE transport to Gemini CLI; `httpUrl` is
                // Streamable HTTP.
                Client::Gemini => pretty(&json!({"mcpServers": {name: {"httpUrl": url,
                    "headers": {"Authorization": bearer(format!("${var}"))}}}})),
                Client::Goose => goose(
                    name,
                    "streamable_http",
                    &format!(
                        "    uri: {}\n    headers:\n      Authorization: {}\n",
                        json_string(url),
                        json_string(&pasted()),
                    ),
                ),
            }
        }
    };
    Ok(Snippet { text, notes })
}

/// The demo, launched by the client: no secret anywhere.
fn render_demo(client: Client, name: &str, command: &str, pg_bin: &str) -> String {
    let server = |typed: bool| {
        let mut server = json!({"command": command, "args": ["demo", "--stdio"],
            "env": {"MCP_SANDBOX_PG_BIN": pg_bin}});
        if typed {
            server["type"] = json!("stdio");
        }
        server
    };
    match client {
        Client::ClaudeDesktop | Client::Cursor | Client::Windsurf | Client::Gemini => {
            pretty(&json!({"mcpServers": {name: server(false)}}))
        }
        Client::ClaudeCode => claude_add(name, &server(true)),
        Client::Vscode => pretty(&json!({"servers": {name: server(true)}})),
        Client::Zed => pretty(&json!({"context_servers": {name: server(false)}})),
        Client::Codex => format!(
            "[mcp_servers.{name}]\ncommand = {}\nargs = [\"demo\", \"--stdio\"]\n\n\
             [mcp_servers.{name}.env]\nMCP_SANDBOX_PG_BIN = {}\n",
            toml_string(command),
            toml_string(pg_bin)
        ),
        Client::Goose => goose(
            name,
            "stdio",
            &format!(
                "    cmd: {}\n    args: [demo, --stdio]\n    envs:\n      MCP_SANDBOX_PG_BIN: {}\n",
                json_string(command),
                json_string(pg_bin),
            ),
        ),
    }
}

/// Claude Code's command that adds `server` as `name`.
fn claude_add(name: &str, server: &Value) -> String {
    format!(
        "claude mcp add-json {name} {}\n",
        shell_quote(&server.to_string())
    )
}

/// A Goose extension of `kind` (stdio, streamable_http) with its own `lines`; the key and
/// name quoted, since YAML reads `true` or `123` as other types.
fn goose(name: &str, kind: &str, lines: &str) -> String {
    let key = json_string(name);
    format!(
        "extensions:\n  {key}:\n    name: {key}\n    type: {kind}\n{lines}    enabled: true\n    \
         timeout: 300\n"
    )
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

/// A JSON string literal, which YAML reads as the same string.
fn json_string(text: &str) -> String {
    Value::from(text).to_string()
}

/// One shell word, single-quoted: `$` and spaces stay as they are for the client.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// A TOML basic string.
fn toml_string(text: &str) -> String {
    toml::Value::from(text).to_string()
}

/// Whether `name` may name a server in every client's file: a TOML bare key and a shell
/// word without quoting that no command reads as an option (it starts with a letter).
pub fn valid_name(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `name` is an environment variable every client's expansion reads whole
/// (`$A-B` is `$A` and then `-B` to a shell-like expander).
pub fn valid_variable(name: &str) -> bool {
    name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// `client-config`: each chosen client's snippet on stdout (with a heading per client
/// when there are several); what the user must still do on stderr. `pg_bin` finds
/// PostgreSQL's server binaries, asked only for the demo form.
pub fn run(
    args: &ClientConfigArgs,
    pg_bin: impl FnOnce() -> anyhow::Result<PathBuf>,
) -> anyhow::Result<()> {
    if !valid_name(&args.name) {
        anyhow::bail!(
            "--name `{}`: use 1-64 of a-z, A-Z, 0-9, - and _, starting with a letter (every \
             client's file takes it as a key, and Claude Code's command as an argument)",
            args.name
        );
    }
    for var in [&args.token_env, &args.database_url_env] {
        if !valid_variable(var) {
            anyhow::bail!(
                "`{var}` is not an environment variable name every client expands: use A-Z, \
                 a-z, 0-9 and _, not starting with a digit"
            );
        }
    }
    let command = || -> anyhow::Result<String> {
        let path = match &args.command {
            Some(path) => path.clone(),
            None => std::env::current_exe()
                .and_then(|exe| exe.canonicalize())
                .map_err(|e| {
                    anyhow::anyhow!("cannot tell where this binary is ({e}): pass --command")
                })?,
        };
        Ok(path.to_string_lossy().into_owned())
    };
    let form = match &args.url {
        _ if args.demo => Form::Demo {
            command: command()?,
            pg_bin: pg_bin()?.to_string_lossy().into_owned(),
        },
        Some(url) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                anyhow::bail!("--url `{url}`: give the MCP endpoint, http(s)://HOST:PORT/mcp");
            }
            Form::Http {
                url: url.clone(),
                token_env: args.token_env.clone(),
            }
        }
        None => Form::Stdio {
            command: command()?,
            database_url_env: args.database_url_env.clone(),
        },
    };
    let clients = &args.client.0;
    let several = clients.len() > 1;
    let mut failed = None;
    for &client in clients {
        let (title, file) = client.describe();
        if several {
            println!("# {title}: {file}");
        }
        match render(client, &args.name, &form) {
            Ok(snippet) => {
                print!("{}", snippet.text);
                for note in snippet.notes {
                    match several {
                        true => println!("# note: {note}"),
                        false => eprintln!("note: {note}"),
                    }
                }
            }
            Err(why) if several => println!("# {why}"),
            Err(why) => failed = Some(why),
        }
        if several {
            println!();
        }
    }
    match failed {
        Some(why) => anyhow::bail!(why),
        None => Ok(()),
    }
}

#[cfg(test)]
#[path = "client_config/tests.rs"]
mod tests;
