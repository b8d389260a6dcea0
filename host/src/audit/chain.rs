//! The audit log's tamper evidence: every line carries a sequence number and, with a key,
//! an HMAC-SHA256 over the previous line's MAC and this line, so an edited, removed,
//! reordered or truncated record breaks the chain at that line. `verify` reads files back.

use ring::hmac;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;
use subtle::ConstantTimeEq;

/// Where the MAC sits: always the last member of the line's object.
const MAC_FIELD: &str = ",\"mac\":\"";
/// Hex digits of an HMAC-SHA256.
const MAC_HEX: usize = 64;
/// The chain value before the first record ever written.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The key of the chain (`Debug` shows nothing of it).
#[derive(Clone)]
pub struct Key(hmac::Key);

impl Key {
    pub fn new(bytes: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    fn mac(&self, prev: &str, body: &str) -> String {
        let mut context = hmac::Context::with_key(&self.0);
        context.update(prev.as_bytes());
        context.update(b"\n");
        context.update(body.as_bytes());
        hex(context.sign().as_ref())
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key([redacted])")
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// Where the chain stands: the last record's sequence number and MAC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    pub seq: u64,
    pub mac: String,
}

impl Default for Head {
    fn default() -> Self {
        Self {
            seq: 0,
            mac: GENESIS.to_owned(),
        }
    }
}

impl Head {
    /// Turns a record (a JSON object, serialized) into its line, newline included, and
    /// advances the chain.
    pub fn seal(&mut self, record: &str, key: Option<&Key>) -> String {
        let seq = self.seq + 1;
        let inner = record
            .strip_prefix('{')
            .and_then(|r| r.strip_suffix('}'))
            .unwrap_or("");
        // One buffer: the body, then (with a key) its MAC in place of the closing brace.
        let mut line = String::with_capacity(record.len() + MAC_FIELD.len() + MAC_HEX + 32);
        let _ = write!(line, "{{\"seq\":{seq}");
        if !inner.trim().is_empty() {
            line.push(',');
            line.push_str(inner);
        }
        line.push('}');
        if let Some(key) = key {
            let mac = key.mac(&self.mac, &line);
            line.pop();
            line.push_str(MAC_FIELD);
            line.push_str(&mac);
            line.push_str("\"}");
            self.mac = mac;
        }
        line.push('\n');
        self.seq = seq;
        line
    }

    /// The head after `line` (a complete line, as written), when it is a record.
    pub fn after(line: &str) -> Option<Head> {
        let line = line.trim_end_matches('\n');
        let value: Value = serde_json::from_str(line).ok()?;
        let seq = value.get("seq")?.as_u64()?;
        let mac = split_mac(line)
            .map(|(_, mac)| mac.to_owned())
            .unwrap_or_else(|| GENESIS.to_owned());
        Some(Head { seq, mac })
    }
}

/// The line without its MAC (the body the MAC covers), and the MAC.
fn split_mac(line: &str) -> Option<(String, &str)> {
    let tail = MAC_FIELD.len() + MAC_HEX + 2;
    if line.len() < tail || !line.ends_with("\"}") {
        return None;
    }
    let at = line.len() - tail;
    let rest = line.get(at..)?;
    let mac = rest.strip_prefix(MAC_FIELD)?.strip_suffix("\"}")?;
    if mac.len() != MAC_HEX || !mac.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((format!("{}}}", &line[..at]), mac))
}

/// What `verify` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// every record checks out
    Intact { records: u64, files: usize },
    /// every complete record checks out; the last line of the last file was cut short
    /// (a crash mid-write, or a truncated file)
    Torn {
        records: u64,
        file: String,
        line: u64,
        bytes: usize,
    },
    /// the chain breaks here
    Broken {
        file: String,
        line: u64,
        reason: String,
    },
}

impl Verdict {
    pub fn exit_code(&self) -> i32 {
        match self {
            Verdict::Intact { .. } => 0,
            Verdict::Broken { .. } => 1,
            Verdict::Torn { .. } => 2,
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Intact { records, files } => {
                write!(f, "OK: {records} records in {files} file(s), chain intact")
            }
            Verdict::Torn {
                records,
                file,
                line,
                bytes,
            } => write!(
                f,
                "TORN: {records} complete records verify; {file} line {line} ({bytes} bytes) \
                 is cut short with no newline: a write interrupted by a crash (kill -9, power \
                 loss) or a truncated file. That record was never acknowledged."
            ),
            Verdict::Broken { file, line, reason } => {
                write!(f, "TAMPERED: {file} line {line}: {reason}")
            }
        }
    }
}

/// Reads `files` (oldest first, as one chain) and checks every line: well-formed, its
/// sequence number one more than the last, and with `key` its MAC over the previous.
/// Each file begins with an `audit_open` record that names where the chain stood; the
/// first file's is taken on trust, later ones must continue the one before.
pub fn verify(files: &[&Path], key: Option<&Key>) -> std::io::Result<Verdict> {
    let mut head: Option<Head> = None;
    let mut records = 0u64;
    for (index, path) in files.iter().enumerate() {
        let name = path.display().to_string();
        let bytes = std::fs::read(path)?;
        let last_file = index + 1 == files.len();
        let mut number = 0u64;
        let mut rest = &bytes[..];
        // A torn line seen earlier: only a server restart may follow it, which says so.
        let mut torn: Option<(u64, usize)> = None;
        while !rest.is_empty() {
            number += 1;
            let (raw, complete) = match rest.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    let raw = &rest[..end];
                    rest = &rest[end + 1..];
                    (raw, true)
                }
                None => {
                    let raw = rest;
                    rest = &[];
                    (raw, false)
                }
            };
            let broken = |reason: String| Verdict::Broken {
                file: name.clone(),
                line: number,
                reason,
            };
            let parsed = std::str::from_utf8(raw)
                .ok()
                .and_then(|line| Some((line, serde_json::from_str::<Value>(line).ok()?)));
            let Some((line, value)) = parsed else {
                if !complete && last_file {
                    return Ok(Verdict::Torn {
                        records,
                        file: name,
                        line: number,
                        bytes: raw.len(),
                    });
                }
                if complete && torn.is_none() {
                    torn = Some((number, raw.len()));
                    continue;
                }
                return Ok(broken("not a JSON record (edited or corrupted)".into()));
            };
            if !complete {
                // Valid JSON without its newline: the write was cut exactly there.
                if last_file {
                    return Ok(Verdict::Torn {
                        records,
                        file: name,
                        line: number,
                        bytes: raw.len(),
                    });
                }
                return Ok(broken("the file ends mid-record".into()));
            }
            let Some(seq) = value.get("seq").and_then(Value::as_u64) else {
                return Ok(broken("the record has no sequence number".into()));
            };
            let event = value.get("event").and_then(Value::as_str).unwrap_or("");
            if let Some((torn_line, torn_bytes)) = torn.take() {
                let resumed = event == "audit_open"
                    && value.pointer("/chain/torn_bytes").and_then(Value::as_u64)
                        == Some(torn_bytes as u64);
                if !resumed {
                    return Ok(Verdict::Broken {
                        file: name.clone(),
                        line: torn_line,
                        reason: "not a JSON record (edited or corrupted)".into(),
                    });
                }
            }
            // An `audit_open` names where the chain stood; it must be where it stands.
            if event == "audit_open" {
                let stated = Head {
                    seq: value
                        .pointer("/chain/prev_seq")
                        .and_then(Value::as_u64)
                        .unwrap_or(0),
                    mac: value
                        .pointer("/chain/prev_mac")
                        .and_then(Value::as_str)
                        .unwrap_or(GENESIS)
                        .to_owned(),
                };
                match &head {
                    None => head = Some(stated),
                    Some(actual) if *actual != stated => {
                        return Ok(broken(format!(
                            "this file continues the chain from record {} but the records \
                             before end at {}: records were removed, or files are out of order",
                            stated.seq, actual.seq
                        )));
                    }
                    Some(_) => {}
                }
            }
            let Some(current) = head.as_mut() else {
                return Ok(broken(
                    "the first record is not an `audit_open` (the start of the file was removed)"
                        .into(),
                ));
            };
            if seq != current.seq + 1 {
                return Ok(broken(format!(
                    "record {seq} follows record {}: records were removed or reordered",
                    current.seq
                )));
            }
            match (key, split_mac(line)) {
                (Some(key), Some((body, mac))) => {
                    let expected = key.mac(&current.mac, &body);
                    let equal: bool = expected.as_bytes().ct_eq(mac.as_bytes()).into();
                    if !equal {
                        return Ok(broken(
                            "the MAC does not match: this record was edited, or the one \
                             before it was removed or replaced"
                                .into(),
                        ));
                    }
                    current.mac = mac.to_owned();
                }
                (Some(_), None) => {
                    return Ok(broken("the record carries no MAC".into()));
                }
                (None, _) => {}
            }
            current.seq = seq;
            records += 1;
        }
        if let Some((line, _)) = torn {
            return Ok(Verdict::Broken {
                file: name,
                line,
                reason: "not a JSON record (edited or corrupted)".into(),
            });
        }
    }
    Ok(Verdict::Intact {
        records,
        files: files.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(head: &Head, torn: Option<usize>) -> String {
        let mut chain = serde_json::json!({"prev_seq": head.seq, "prev_mac": head.mac});
        if let Some(bytes) = torn {
            chain["torn_bytes"] = bytes.into();
        }
        serde_json::json!({"event": "audit_open", "chain": chain}).to_string()
    }

    fn log(key: Option<&Key>, n: usize) -> (Vec<String>, Head) {
        let mut head = Head::default();
        let mut lines = vec![];
        let first = open(&head, None);
        lines.push(head.seal(&first, key));
        for i in 0..n {
            lines.push(head.seal(&format!("{{\"event\":\"tool_call\",\"i\":{i}}}"), key));
        }
        (lines, head)
    }

    fn check(lines: &[String], key: Option<&Key>) -> Verdict {
        let dir = std::env::temp_dir().join(format!(
            "mcp-sandbox-chain-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let path = dir.join("audit.log");
        std::fs::write(&path, lines.concat()).expect("written");
        verify(&[&path], key).expect("readable")
    }

    #[test]
    fn an_intact_chain_verifies_and_every_kind_of_edit_is_named() {
        let key = Key::new(b"0123456789abcdef0123456789abcdef");
        let (lines, head) = log(Some(&key), 5);
        assert_eq!(head.seq, 6);
        assert!(matches!(
            check(&lines, Some(&key)),
            Verdict::Intact { records: 6, .. }
        ));
        // Edited: a value changed.
        let mut edited = lines.clone();
        edited[3] = edited[3].replace("\"i\":2", "\"i\":7");
        assert!(matches!(
            check(&edited, Some(&key)),
            Verdict::Broken { line: 4, .. }
        ));
        // Removed.
        let mut removed = lines.clone();
        removed.remove(2);
        assert!(matches!(
            check(&removed, Some(&key)),
            Verdict::Broken { line: 3, .. }
        ));
        // Swapped.
        let mut swapped = lines.clone();
        swapped.swap(2, 3);
        assert!(matches!(
            check(&swapped, Some(&key)),
            Verdict::Broken { line: 3, .. }
        ));
        // Renumbered after a removal, without the key: the MAC still breaks.
        let mut renumbered = lines.clone();
        renumbered.remove(2);
        for (i, line) in renumbered.iter_mut().enumerate().skip(2) {
            *line = line.replace(&format!("\"seq\":{}", i + 2), &format!("\"seq\":{}", i + 1));
        }
        assert!(matches!(
            check(&renumbered, Some(&key)),
            Verdict::Broken { line: 3, .. }
        ));
        // The wrong key.
        let other = Key::new(b"another key of thirty-two bytes!");
        assert!(matches!(
            check(&lines, Some(&other)),
            Verdict::Broken { line: 1, .. }
        ));
        // Truncated mid-line: torn, not tampered.
        let mut torn = lines.clone();
        let last = torn.len() - 1;
        torn[last].truncate(20);
        assert!(matches!(
            check(&torn, Some(&key)),
            Verdict::Torn {
                records: 5,
                line: 6,
                ..
            }
        ));
    }

    #[test]
    fn a_torn_line_followed_by_a_restart_that_names_it_verifies() {
        let key = Key::new(b"0123456789abcdef0123456789abcdef");
        let (mut lines, mut head) = log(Some(&key), 2);
        lines.push("{\"seq\":4,\"eve\n".to_owned());
        let reopen = open(&head, Some(13));
        lines.push(head.seal(&reopen, Some(&key)));
        lines.push(head.seal("{\"event\":\"tool_call\"}", Some(&key)));
        assert!(matches!(
            check(&lines, Some(&key)),
            Verdict::Intact { records: 5, .. }
        ));
        // Garbage the restart does not account for is tampering.
        let mut forged = lines.clone();
        forged[3] = "{\"seq\":4,\"evX\n".to_owned() + "junk\n";
        assert!(matches!(check(&forged, Some(&key)), Verdict::Broken { .. }));
    }

    #[test]
    fn without_a_key_sequence_numbers_still_catch_removal() {
        let (lines, _) = log(None, 3);
        assert!(matches!(
            check(&lines, None),
            Verdict::Intact { records: 4, .. }
        ));
        let mut removed = lines.clone();
        removed.remove(1);
        assert!(matches!(
            check(&removed, None),
            Verdict::Broken { line: 2, .. }
        ));
    }
}
