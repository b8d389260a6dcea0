//! `scripts/release`: what a user installs without building, made from the built binary.
//! The unpacked archive's binary answers `--version` and an MCP handshake over stdio, its
//! checksum verifies, the `.mcpb` bundle launches as Claude Desktop would (its manifest's
//! command, arguments and environment substituted), and the names and versions in
//! `packaging/` agree with the crate, the served tools and the Dockerfile's label.

use crate::binary::binary;
use crate::stdio::{Client, launch_command};
use crate::util::tools::{mcpb, repo};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

crate::trials!(release: the_archives_install_and_serve);

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn run(command: &mut Command) -> String {
    let out = command.output().expect("running it");
    assert!(
        out.status.success(),
        "{command:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json_file(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// Launches `program args` with `env` as a client would, and checks the handshake and
/// the tool list; the tools' names.
async fn serves(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let mut client = Client::new(launch_command(&program.to_string_lossy(), args, env));
    let init = client.initialize().await;
    assert_eq!(init["result"]["serverInfo"]["version"], VERSION, "{init}");
    let list = client.request(1, "tools/list", json!({})).await;
    let mut names: Vec<String> = list["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{list}"))
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    let (code, _) = client.close(Duration::from_secs(30)).await;
    assert_eq!(code, 0, "{program:?} ended with {code}");
    names
}

async fn the_archives_install_and_serve() {
    mcpb();
    let dir = crate::util::TempDir::new();
    let out = dir.path().join("dist");
    let built = binary();
    let said = run(Command::new(repo().join("scripts/release")).args([
        "--binary",
        &built.to_string_lossy(),
        "--out",
        &out.to_string_lossy(),
    ]));
    println!("{said}");
    let host = run(Command::new("rustc").arg("-vV"))
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .expect("rustc's host");
    let name = format!("mcp-sandbox-{VERSION}-{host}");

    // The archive: checksum, stripped binary, docs.
    run(Command::new("sha256sum")
        .current_dir(&out)
        .args(["-c", &format!("{name}.tar.gz.sha256")]));
    let unpacked = dir.path().join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    run(Command::new("tar")
        .arg("-xzf")
        .arg(out.join(format!("{name}.tar.gz")))
        .arg("-C")
        .arg(&unpacked));
    let installed = unpacked.join(&name).join("mcp-sandbox");
    for doc in ["README.md", "SECURITY.md", "docs/configuration.md"] {
        assert!(unpacked.join(&name).join(doc).is_file(), "{doc}");
    }
    let (full, stripped) = (
        std::fs::metadata(&built).unwrap().len(),
        std::fs::metadata(&installed).unwrap().len(),
    );
    println!("release: {full} bytes built, {stripped} in the archive");
    assert!(stripped * 3 < full, "stripped: {stripped} of {full} bytes");
    assert_eq!(
        run(Command::new(&installed).arg("--version")).trim(),
        format!("mcp-sandbox {VERSION}")
    );
    let reader = crate::util::db::reader_url();
    let tools = serves(&installed, &["stdio"], &[("DATABASE_URL", &reader)]).await;

    // The bundle, launched as Claude Desktop does from its manifest.
    let bundle = dir.path().join("bundle");
    run(Command::new("unzip")
        .arg("-q")
        .arg(out.join(format!("{name}.mcpb")))
        .arg("-d")
        .arg(&bundle));
    let manifest = json_file(&bundle.join("manifest.json"));
    assert_eq!(manifest["version"], VERSION);
    assert_eq!(manifest["compatibility"]["platforms"], json!(["linux"]));
    assert_eq!(manifest["user_config"]["database_url"]["sensitive"], true);
    let config = &manifest["server"]["mcp_config"];
    let dirname = bundle.to_string_lossy();
    let substitute = |text: &Value| {
        text.as_str()
            .expect("a string")
            .replace("${__dirname}", &dirname)
            .replace("${user_config.database_url}", &reader)
    };
    let command = substitute(&config["command"]);
    let args: Vec<String> = config["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(substitute)
        .collect();
    let env: Vec<(String, String)> = config["env"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), substitute(v)))
        .collect();
    assert_eq!(args, ["stdio"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let bundled = serves(Path::new(&command), &args, &env).await;
    assert_eq!(bundled, tools);
    let mut listed: Vec<String> = manifest["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    listed.sort();
    assert_eq!(listed, tools, "the manifest lists the tools served");

    // The registry entry: this version, this bundle's checksum, the image's label.
    let server = json_file(&out.join("server.json"));
    assert_eq!(server["version"], VERSION);
    let sha = run(Command::new("sha256sum").arg(out.join(format!("{name}.mcpb"))));
    let sha = sha.split_whitespace().next().unwrap();
    let package = server["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| {
            p["identifier"]
                .as_str()
                .is_some_and(|i| i.ends_with(&format!("/{name}.mcpb")))
        })
        .unwrap_or_else(|| panic!("a package for {name}.mcpb in {server}"));
    assert_eq!(package["fileSha256"], sha);
    assert!(
        package["identifier"]
            .as_str()
            .unwrap()
            .contains(&format!("/v{VERSION}/"))
    );
    let dockerfile = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    let label = format!(
        "LABEL io.modelcontextprotocol.server.name=\"{}\"",
        server["name"].as_str().unwrap()
    );
    assert!(dockerfile.contains(&label), "{label}");
    let oci = format!("ghcr.io/mcp-sandbox/mcp-sandbox:{VERSION}");
    assert!(server.to_string().contains(&oci), "{oci}");
}
