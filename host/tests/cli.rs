//! The binary's command-line surface. (Its presence also makes `cargo test` build the
//! `mcp-sandbox` binary, which the end-to-end tests in `tests/` run.)

use std::process::Command;

fn run(args: &[&str]) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_mcp-sandbox"))
        .args(args)
        .output()
        .expect("running mcp-sandbox");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn help_lists_the_commands_and_their_environment() {
    let (ok, text) = run(&["--help"]);
    assert!(ok, "{text}");
    assert!(text.contains("serve") && text.contains("demo"), "{text}");
    let (ok, text) = run(&["serve", "--help"]);
    assert!(ok, "{text}");
    for needle in [
        "--listen",
        "MCP_SANDBOX_LISTEN",
        "DATABASE_URL",
        "MCP_SANDBOX_TOKEN",
        "--components-dir",
        "MCP_SANDBOX_COMPONENTS",
        "--insecure-no-auth",
    ] {
        assert!(text.contains(needle), "{needle} missing from serve --help");
    }
}

#[test]
fn version_is_the_package_version() {
    let (ok, text) = run(&["--version"]);
    assert!(ok);
    assert!(text.contains(env!("CARGO_PKG_VERSION")), "{text}");
}

#[test]
fn bad_flags_are_rejected_with_a_reason() {
    let (ok, text) = run(&[
        "serve",
        "--database-url",
        "postgres://h/db",
        "--token",
        "t",
        "--call-timeout",
        "soon",
    ]);
    assert!(!ok);
    assert!(text.contains("soon"), "{text}");
}

#[test]
fn worker_threads_must_be_one_or_more() {
    for threads in ["0", "-1", "many"] {
        let (ok, text) = run(&[
            "serve",
            "--database-url",
            "postgres://h/db",
            "--token",
            "a-token-long-enough-0123",
            &format!("--worker-threads={threads}"),
        ]);
        assert!(!ok, "--worker-threads {threads} accepted: {text}");
        assert!(text.contains("--worker-threads"), "{text}");
    }
}
