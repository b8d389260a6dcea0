//! The deployment files: the Kubernetes manifests pass a strict offline schema check
//! (`kubernetes-validate`, from PyPI, installed by `scripts/setup-test-tools`), and what
//! they and the Dockerfile tell the binary (flags, environment, probe paths, ports) is
//! what the binary understands.

use crate::util::{TempDir, TestServer, tools};
use clap::{CommandFactory, Parser};
use http::StatusCode;
use mcp_sandbox::config::Cli;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

crate::trials!(deploy: manifests_pass_strict_schema_validation, manifests_and_dockerfile_speak_the_binarys_language, probes_and_ports_answer, the_tls_variant_is_a_valid_https_deployment);

/// Kubernetes release the manifests are checked against.
const KUBERNETES: &str = "1.33.0";

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy_dir().join(path)).unwrap()
}

/// Every manifest of core Kubernetes kinds (the Gateway API route is a CRD: no schema).
fn manifests() -> Vec<PathBuf> {
    let dir = deploy_dir().join("kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .collect();
    files.sort();
    files
}

fn validate(files: &[PathBuf]) -> (bool, String) {
    let validator = tools::venv_program("kubernetes-validate");
    let output = Command::new(validator)
        .args(["--strict", "-k", KUBERNETES])
        .args(files)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

async fn manifests_pass_strict_schema_validation() {
    let files = manifests();
    assert!(files.len() >= 8, "{files:?}");
    let (ok, report) = validate(&files);
    assert!(ok, "{report}");
    assert_eq!(
        report.matches(" passed for resource ").count(),
        files.len(),
        "every manifest checked against a schema:\n{report}"
    );
    // Every resource kustomize applies is one of those files, and vice versa (the Secret
    // is an example that is never applied).
    let kustomization = read("kubernetes/kustomization.yaml");
    let listed: BTreeSet<String> = kustomization
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- "))
        .filter(|l| l.ends_with(".yaml"))
        .map(str::to_owned)
        .collect();
    let present: BTreeSet<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|n| n != "secret.example.yaml")
        .collect();
    assert_eq!(listed, present);

    // The validator does catch mistakes: a misspelt field fails the strict check.
    let dir = TempDir::new();
    let broken = dir.path().join("deployment.yaml");
    let text = read("kubernetes/deployment.yaml").replace("readinessProbe:", "readinesProbe:");
    std::fs::write(&broken, text).unwrap();
    let (ok, report) = validate(&[broken]);
    assert!(!ok, "a misspelt field passed:\n{report}");

    // Every YAML file under deploy/ parses (the Gateway API route and the Prometheus
    // files have no Kubernetes schema to check against).
    let yamllint = tools::venv_program("yamllint");
    let output = Command::new(yamllint)
        .args([
            "-d",
            "{extends: relaxed, rules: {line-length: disable}}",
            "-f",
            "parsable",
        ])
        .arg(deploy_dir())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && !report.contains("[error]"),
        "yamllint:\n{report}"
    );

    let route = read("kubernetes/gateway/httproute.yaml");
    assert!(route.contains("sessionName: Mcp-Session-Id"), "{route}");
    assert!(route.contains("type: Header"), "{route}");
}

/// Every environment variable the `serve` command reads.
fn serve_env_names() -> BTreeSet<String> {
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").unwrap();
    serve
        .get_arguments()
        .chain(cli.get_arguments())
        .filter_map(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
        .collect()
}

async fn manifests_and_dockerfile_speak_the_binarys_language() {
    let known = serve_env_names();
    let deployment = read("kubernetes/deployment.yaml");
    let dockerfile = read("Dockerfile");
    let mut used = BTreeSet::new();
    for line in deployment.lines() {
        if let Some(name) = line.trim().strip_prefix("- name: ")
            && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        {
            used.insert(name.to_owned());
        }
    }
    for word in dockerfile.split_whitespace() {
        if let Some((name, _)) = word.split_once('=')
            && name.starts_with("MCP_SANDBOX_")
        {
            used.insert(name.to_owned());
        }
    }
    assert!(used.len() >= 6, "{used:?}");
    let unknown: Vec<&String> = used.difference(&known).collect();
    assert!(unknown.is_empty(), "not read by `serve`: {unknown:?}");

    // The container's arguments parse as `serve` flags.
    let mut args = vec!["mcp-sandbox".to_owned(), "serve".to_owned()];
    args.extend(
        deployment
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- --"))
            .map(|flag| format!("--{flag}")),
    );
    args.extend(["--database-url".into(), "postgres://x@localhost/x".into()]);
    assert!(args.len() > 4, "{args:?}");
    if let Err(e) = Cli::try_parse_from(&args) {
        panic!("the Deployment's args do not parse: {e}");
    }
    assert!(dockerfile.contains(r#"ENTRYPOINT ["/usr/local/bin/mcp-sandbox", "serve"]"#));
    assert!(dockerfile.contains("USER 65532:65532"));
}

async fn probes_and_ports_answer() {
    let deployment = read("kubernetes/deployment.yaml");
    for path in ["/health", "/ready"] {
        assert!(deployment.contains(&format!("path: {path}")), "{path}");
    }
    assert!(deployment.contains("containerPort: 8080"));
    assert!(deployment.contains("prometheus.io/port: \"9464\""));
    let server = TestServer::with_flags(&["--metrics-listen", "127.0.0.1:0"]).await;
    let http = server.http();
    assert_eq!(http.get("/health", &[]).await.status, StatusCode::OK);
    assert_eq!(http.get("/ready", &[]).await.status, StatusCode::OK);
    let metrics = crate::util::Http::new(server.metrics_addr.unwrap());
    let scraped = metrics.get("/metrics", &[]).await;
    assert_eq!(scraped.status, StatusCode::OK);
    assert!(scraped.text().contains("component_info{"));
}

/// The TLS overlay's patch, applied to the base Deployment as kustomize applies it, gives
/// a Deployment that passes the strict check, mounts the Secret where the server is told
/// to look, and probes over HTTPS; the variables it sets are ones `serve` reads.
async fn the_tls_variant_is_a_valid_https_deployment() {
    let overlay = read("kubernetes/tls/kustomization.yaml");
    assert!(overlay.contains("- ../") && overlay.contains("path: deployment-https.yaml"));
    let dir = TempDir::new();
    let patched = dir.path().join("deployment.yaml");
    let output = Command::new(tools::python())
        .arg(tools::repo().join("scripts/apply-json-patch"))
        .arg(deploy_dir().join("kubernetes/deployment.yaml"))
        .arg(deploy_dir().join("kubernetes/tls/deployment-https.yaml"))
        .arg(&patched)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (ok, report) = validate(std::slice::from_ref(&patched));
    assert!(ok, "{report}");
    let text = std::fs::read_to_string(&patched).unwrap();
    assert_eq!(text.matches("scheme: HTTPS").count(), 3, "{text}");
    for expected in [
        "MCP_SANDBOX_TLS_CERT",
        "/etc/mcp-sandbox-tls/tls.crt",
        "MCP_SANDBOX_TLS_KEY",
        "mountPath: /etc/mcp-sandbox-tls",
        "secretName: mcp-sandbox-tls",
        "prometheus.io/scheme: https",
    ] {
        assert!(text.contains(expected), "{expected} in {text}");
    }
    let known = serve_env_names();
    for name in ["MCP_SANDBOX_TLS_CERT", "MCP_SANDBOX_TLS_KEY"] {
        assert!(known.contains(name), "{name} is not read by serve");
    }
}
