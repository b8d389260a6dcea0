//! The outside programs some tests drive (the official MCP SDK clients, the Kubernetes
//! manifest validator, nginx, promtool), installed on first use by
//! `scripts/setup-test-tools` into ignored folders and reused afterwards, so the README's
//! `cargo test --release` needs nothing installed by hand.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs `scripts/setup-test-tools` once per test run (the first test that needs a tool
/// waits for it; the script itself does nothing when everything is in place).
fn ensure() {
    static SETUP: OnceLock<Result<(), String>> = OnceLock::new();
    let result = SETUP.get_or_init(|| {
        let script = repo().join("scripts/setup-test-tools");
        let output = Command::new(&script)
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} failed ({}); it installs the test tools from the package registries \
                 (needs python3, npm, apt-get):\n{}\n{}",
                script.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ))
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// A tool installed by the setup script, at `relative` from the repository's root.
fn installed(relative: &str) -> PathBuf {
    ensure();
    let path = repo().join(relative);
    assert!(
        path.exists(),
        "{} is missing after scripts/setup-test-tools",
        path.display()
    );
    path
}

/// The Python interpreter of the virtual environment holding the MCP Python SDK, the
/// manifest validator and yamllint.
pub fn python() -> PathBuf {
    installed("target/interop/venv/bin/python")
}

/// A program of that virtual environment (`kubernetes-validate`, `yamllint`).
pub fn venv_program(name: &str) -> PathBuf {
    installed(&format!("target/interop/venv/bin/{name}"))
}

/// The TypeScript SDK client script (its `node_modules` installed beside it).
pub fn typescript_client() -> PathBuf {
    installed("interop/typescript/node_modules/@modelcontextprotocol/sdk");
    repo().join("interop/typescript/client.mjs")
}

/// The test authorization server's script (oidc-provider installed beside it).
pub fn authorization_server() -> PathBuf {
    installed("interop/oauth/node_modules/oidc-provider");
    repo().join("interop/oauth/server.mjs")
}

/// nginx, unpacked from Debian's package.
pub fn nginx() -> PathBuf {
    installed("target/nginx/usr/sbin/nginx")
}

/// promtool: `$PROMTOOL`, `promtool` on PATH, or the copy unpacked from Debian's
/// prometheus package.
pub fn promtool() -> PathBuf {
    if let Some(path) = std::env::var_os("PROMTOOL") {
        return path.into();
    }
    if let Ok(out) = Command::new("promtool").arg("--version").output()
        && out.status.success()
    {
        return "promtool".into();
    }
    installed("target/promtool/usr/bin/promtool")
}

/// The official MCPB packer and validator `scripts/release` uses (`packaging/`).
pub fn mcpb() -> PathBuf {
    installed("packaging/node_modules/.bin/mcpb")
}
