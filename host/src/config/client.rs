//! `client-config`'s arguments: which MCP clients, and the form their snippet takes.

use clap::Args;
use std::path::PathBuf;

/// The clients whose configuration shape is known (`../shared/research/local-clients.md`
/// and each client's documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Client {
    ClaudeDesktop,
    ClaudeCode,
    Cursor,
    Vscode,
    Windsurf,
    Zed,
    Codex,
    Gemini,
    Goose,
}

impl Client {
    pub const ALL: [Client; 9] = [
        Client::ClaudeDesktop,
        Client::ClaudeCode,
        Client::Cursor,
        Client::Vscode,
        Client::Windsurf,
        Client::Zed,
        Client::Codex,
        Client::Gemini,
        Client::Goose,
    ];

    /// The client's name and where its configuration goes.
    pub fn describe(self) -> (&'static str, &'static str) {
        match self {
            Client::ClaudeDesktop => (
                "Claude Desktop",
                "claude_desktop_config.json (macOS: ~/Library/Application Support/Claude/; \
                 Windows: %APPDATA%\\Claude\\)",
            ),
            Client::ClaudeCode => ("Claude Code", "run it in a shell"),
            Client::Cursor => (
                "Cursor",
                "~/.cursor/mcp.json, or .cursor/mcp.json in a project",
            ),
            Client::Vscode => (
                "VS Code",
                ".vscode/mcp.json, or MCP: Open User Configuration",
            ),
            Client::Windsurf => ("Windsurf", "~/.codeium/windsurf/mcp_config.json"),
            Client::Zed => ("Zed", "~/.config/zed/settings.json, merged into it"),
            Client::Codex => ("Codex", "~/.codex/config.toml"),
            Client::Gemini => ("Gemini CLI", "~/.gemini/settings.json, merged into it"),
            Client::Goose => ("Goose", "~/.config/goose/config.yaml, merged into it"),
        }
    }
}

#[derive(Debug, Args)]
pub struct ClientConfigArgs {
    /// The client, or `all`: claude-desktop, claude-code, cursor, vscode, windsurf, zed,
    /// codex, gemini, goose
    #[arg(value_parser = parse_clients)]
    pub client: ClientChoice,

    /// A running server's MCP endpoint (http(s)://HOST:PORT/mcp): the HTTP form. Without
    /// it, the stdio form (the client launches this binary)
    #[arg(long)]
    pub url: Option<String>,

    /// The environment variable that holds the token (HTTP form)
    #[arg(long, default_value = "MCP_SANDBOX_TOKEN")]
    pub token_env: String,

    /// The environment variable that holds the database URL (stdio form)
    #[arg(long, default_value = "DATABASE_URL")]
    pub database_url_env: String,

    /// The server's name in the client's configuration
    #[arg(long, default_value = "postgres")]
    pub name: String,

    /// The client launches the demo (`demo --stdio`: a throwaway database with a sample
    /// schema) instead of serving your database
    #[arg(long, conflicts_with = "url")]
    pub demo: bool,

    /// The binary the client launches (stdio form) [default: this binary's absolute path]
    #[arg(long)]
    pub command: Option<PathBuf>,
}

/// `client-config`'s first argument.
#[derive(Clone, Debug)]
pub struct ClientChoice(pub Vec<Client>);

fn parse_clients(text: &str) -> Result<ClientChoice, String> {
    use Client;
    use clap::ValueEnum;
    if text == "all" {
        return Ok(ClientChoice(Client::ALL.to_vec()));
    }
    Client::from_str(text, true)
        .map(|client| ClientChoice(vec![client]))
        .map_err(|_| {
            let known: Vec<String> = Client::ALL
                .iter()
                .filter_map(|c| c.to_possible_value().map(|v| v.get_name().to_owned()))
                .collect();
            format!(
                "`{text}` is not a client this knows: {}, or all",
                known.join(", ")
            )
        })
}
