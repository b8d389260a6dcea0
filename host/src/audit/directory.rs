//! A directory of audit logs, as a fleet leaves them (one file per replica, each with its
//! rotations): the files grouped into chains, `PATH` with its `PATH.N`, and each chain
//! verified on its own, oldest file first.

use super::chain::{Key, Verdict, verify};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One chain of a directory and what its check found.
#[derive(Debug)]
pub struct ChainVerdict {
    /// the chain's current file name (rotated files end in `.N` after it)
    pub chain: String,
    pub files: Vec<PathBuf>,
    pub verdict: Verdict,
}

/// `name` as (chain, rotation): `audit.log.3` is rotation 3 of `audit.log`; a name without
/// a numeric suffix is its chain's current file (rotation 0).
fn chain_of(name: &str) -> (&str, u64) {
    match name.rsplit_once('.') {
        Some((base, n)) if !base.is_empty() && !n.is_empty() => match n.parse::<u64>() {
            // only canonical numbers count as rotations (`x.01` is a file of its own)
            Ok(v) if v > 0 && v.to_string() == n => (base, v),
            _ => (name, 0),
        },
        _ => (name, 0),
    }
}

/// The chains in `dir` (its regular files; names starting with `.` skipped), each oldest
/// file first: `PATH.K` … `PATH.1`, `PATH`.
pub fn chains(dir: &Path) -> std::io::Result<BTreeMap<String, Vec<PathBuf>>> {
    let mut found: BTreeMap<String, Vec<(u64, PathBuf)>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') {
            continue;
        }
        let (chain, rotation) = chain_of(name);
        found
            .entry(chain.to_owned())
            .or_default()
            .push((rotation, entry.path()));
    }
    Ok(found
        .into_iter()
        .map(|(chain, mut files)| {
            files.sort_by_key(|f| std::cmp::Reverse(f.0));
            (chain, files.into_iter().map(|(_, path)| path).collect())
        })
        .collect())
}

/// Verifies every chain in `dir`.
pub fn verify_dir(dir: &Path, key: Option<&Key>) -> std::io::Result<Vec<ChainVerdict>> {
    let mut verdicts = Vec::new();
    for (chain, files) in chains(dir)? {
        let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
        let verdict = verify(&paths, key)?;
        verdicts.push(ChainVerdict {
            chain,
            files,
            verdict,
        });
    }
    Ok(verdicts)
}

/// The exit code of a directory's check: tampered (1) over torn (2) over intact (0).
pub fn exit_code(verdicts: &[ChainVerdict]) -> i32 {
    let codes: Vec<i32> = verdicts.iter().map(|v| v.verdict.exit_code()).collect();
    if codes.contains(&1) {
        1
    } else if codes.contains(&2) {
        2
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotations_join_their_chain_oldest_first() {
        assert_eq!(chain_of("r0.jsonl"), ("r0.jsonl", 0));
        assert_eq!(chain_of("r0.jsonl.2"), ("r0.jsonl", 2));
        assert_eq!(chain_of("audit.log.01"), ("audit.log.01", 0));
        assert_eq!(chain_of("audit.0"), ("audit.0", 0));
        assert_eq!(chain_of(".7"), (".7", 0));
        let dir = std::env::temp_dir().join(format!("mcp-sandbox-chains-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).expect("a temp dir");
        for name in [
            "a.log", "a.log.1", "a.log.10", "a.log.2", "b.log", ".hidden",
        ] {
            std::fs::write(dir.join(name), "").expect("a file");
        }
        let chains = chains(&dir).expect("listed");
        let names = |chain: &str| -> Vec<String> {
            chains[chain]
                .iter()
                .map(|p| {
                    p.file_name()
                        .expect("a name")
                        .to_string_lossy()
                        .into_owned()
                })
                .collect()
        };
        assert_eq!(chains.len(), 2, "{chains:?}");
        assert_eq!(names("a.log"), ["a.log.10", "a.log.2", "a.log.1", "a.log"]);
        assert_eq!(names("b.log"), ["b.log"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
