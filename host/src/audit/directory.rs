//! A directory of audit logs, as a fleet leaves them (one file per replica, each with its
//! rotations): the files grouped into chains, `PATH` with its `PATH.N` (and a
//! `PATH.rotating` a crash mid-rotation left), each chain verified on its own, oldest
//! file first. The rule is the server's own naming: a file whose name ends in `.N` is a
//! rotation of the name before it, so two replicas' files must not be named `audit` and
//! `audit.1`. Compressed or renamed rotations (`PATH.1.gz`, `PATH-20261207`) are chains
//! of their own and fail as such: decompress or leave them out.

use super::chain::{Key, Verdict, verify};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One chain of a directory and what its check found (or why its files could not be
/// read).
#[derive(Debug)]
pub struct ChainVerdict {
    /// the chain's current file name (rotated files end in `.N` after it)
    pub chain: String,
    pub files: Vec<PathBuf>,
    pub verdict: std::io::Result<Verdict>,
}

/// What a directory holds: its chains, and the entries that are not files of one (said,
/// so nothing is left out silently).
#[derive(Debug, Default)]
pub struct Listing {
    pub chains: BTreeMap<String, Vec<PathBuf>>,
    pub skipped: Vec<String>,
}

/// `name` as (chain, age): `audit.log.3` is rotation 3 of `audit.log` (age 4), a
/// leftover `audit.log.rotating` is newer than `audit.log.1` (age 1), and a name without
/// either suffix is its chain's current file (age 0).
fn chain_of(name: &str) -> (&str, u64) {
    if let Some(base) = name.strip_suffix(".rotating")
        && !base.is_empty()
    {
        return (base, 1);
    }
    match name.rsplit_once('.') {
        Some((base, n)) if !base.is_empty() && !n.is_empty() => match n.parse::<u64>() {
            // only canonical numbers count as rotations (`x.01` is a file of its own)
            Ok(v) if v > 0 && v.to_string() == n => (base, v.saturating_add(1)),
            _ => (name, 0),
        },
        _ => (name, 0),
    }
}

/// The chains in `dir` (its regular files; names starting with `.` left out), each
/// oldest file first: `PATH.K` … `PATH.1`, `PATH.rotating`, `PATH`.
pub fn chains(dir: &Path) -> std::io::Result<Listing> {
    let mut found: BTreeMap<String, Vec<(u64, PathBuf)>> = BTreeMap::new();
    let mut skipped = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            skipped.push(format!("{} (not UTF-8)", name.to_string_lossy()));
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        // A symbolic link is followed; anything else that is not a file is said.
        if !std::fs::metadata(entry.path())?.is_file() {
            skipped.push(format!("{name} (not a file)"));
            continue;
        }
        let (chain, age) = chain_of(name);
        found
            .entry(chain.to_owned())
            .or_default()
            .push((age, entry.path()));
    }
    let chains = found
        .into_iter()
        .map(|(chain, mut files)| {
            files.sort_by_key(|f| std::cmp::Reverse(f.0));
            (chain, files.into_iter().map(|(_, path)| path).collect())
        })
        .collect();
    Ok(Listing { chains, skipped })
}

/// Verifies every chain in `dir`; a chain whose files cannot be read says so, and the
/// others are still checked.
pub fn verify_dir(
    dir: &Path,
    key: Option<&Key>,
) -> std::io::Result<(Vec<ChainVerdict>, Vec<String>)> {
    let Listing { chains, skipped } = chains(dir)?;
    let verdicts = chains
        .into_iter()
        .map(|(chain, files)| {
            let paths: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
            let verdict = verify(&paths, key);
            ChainVerdict {
                chain,
                files,
                verdict,
            }
        })
        .collect();
    Ok((verdicts, skipped))
}

/// The exit code of a directory's check: tampered (1) over unreadable (3) over torn (2)
/// over intact (0).
pub fn exit_code(verdicts: &[ChainVerdict]) -> i32 {
    let codes: Vec<i32> = verdicts
        .iter()
        .map(|v| v.verdict.as_ref().map_or(3, Verdict::exit_code))
        .collect();
    [1, 3, 2]
        .into_iter()
        .find(|c| codes.contains(c))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotations_join_their_chain_oldest_first() {
        assert_eq!(chain_of("r0.jsonl"), ("r0.jsonl", 0));
        assert_eq!(chain_of("r0.jsonl.2"), ("r0.jsonl", 3));
        assert_eq!(chain_of("r0.jsonl.rotating"), ("r0.jsonl", 1));
        assert_eq!(chain_of("audit.log.01"), ("audit.log.01", 0));
        assert_eq!(chain_of("audit.0"), ("audit.0", 0));
        assert_eq!(chain_of(".7"), (".7", 0));
        let dir = std::env::temp_dir().join(format!("mcp-sandbox-chains-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).expect("a temp dir");
        for name in [
            "a.log",
            "a.log.1",
            "a.log.10",
            "a.log.2",
            "a.log.rotating",
            "b.log",
            ".hidden",
        ] {
            std::fs::write(dir.join(name), "").expect("a file");
        }
        let listing = chains(&dir).expect("listed");
        assert_eq!(listing.skipped, ["sub (not a file)"]);
        let chains = listing.chains;
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
        assert_eq!(
            names("a.log"),
            ["a.log.10", "a.log.2", "a.log.1", "a.log.rotating", "a.log"]
        );
        assert_eq!(names("b.log"), ["b.log"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
