//! The admin layer in the store, so an admin change made on one replica reaches every
//! replica: per component name the last action (put, remove, rollback) with the digest
//! it left live and a generation number, and each put version's bytes, addressed by
//! their SHA-256. Replicas poll the generation (`server/fleet.rs`).

use super::{Store, StoreError, scripts};
use std::collections::BTreeMap;
use std::time::Duration;

/// The bound on moving a component's bytes (up to `--max-component-mib`).
const BLOB_TIMEOUT: Duration = Duration::from_secs(30);

/// The last admin action on one name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminEntry {
    pub generation: u64,
    pub action: AdminAction,
    /// the version left live (put, rollback)
    pub digest: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminAction {
    Put,
    Remove,
    Rollback,
}

impl AdminAction {
    fn as_str(self) -> &'static str {
        match self {
            AdminAction::Put => "put",
            AdminAction::Remove => "remove",
            AdminAction::Rollback => "rollback",
        }
    }
}

/// `"<generation> <action> [<digest>]"`, as the record script writes it.
fn parse_entry(text: &str) -> Option<AdminEntry> {
    let mut parts = text.split(' ');
    let generation = parts.next()?.parse().ok()?;
    let action = match parts.next()? {
        "put" => AdminAction::Put,
        "remove" => AdminAction::Remove,
        "rollback" => AdminAction::Rollback,
        _ => return None,
    };
    let digest = parts
        .next()
        .filter(|d| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_owned);
    Some(AdminEntry {
        generation,
        action,
        digest,
    })
}

impl Store {
    fn blob_key(&self, digest: &str) -> String {
        self.key(&format!("blob:{digest}"))
    }

    /// The admin layer's generation: it grows with every admin change.
    pub async fn admin_generation(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let key = self.key("admin:gen");
        let generation: Option<u64> = self
            .run(
                "admin_gen",
                false,
                redis::cmd("GET").arg(&key).query_async(&mut conn),
            )
            .await?;
        Ok(generation.unwrap_or(0))
    }

    /// Every name's last admin action.
    pub async fn admin_entries(&self) -> Result<BTreeMap<String, AdminEntry>, StoreError> {
        let mut conn = self.conn();
        let key = self.key("admin");
        let raw: BTreeMap<String, String> = self
            .run(
                "admin_read",
                false,
                redis::cmd("HGETALL").arg(&key).query_async(&mut conn),
            )
            .await?;
        Ok(raw
            .into_iter()
            .filter_map(|(name, entry)| parse_entry(&entry).map(|e| (name, e)))
            .collect())
    }

    /// Records an admin action done here; returns its generation. A put's bytes are
    /// stored first (once per digest), so the entry never names bytes the store lacks.
    pub async fn record_admin(
        &self,
        name: &str,
        action: AdminAction,
        digest: Option<&str>,
        bytes: Option<&[u8]>,
    ) -> Result<u64, StoreError> {
        if let (Some(digest), Some(bytes)) = (digest, bytes) {
            let mut conn = self.blob_conn();
            let key = self.blob_key(digest);
            let mut command = redis::cmd("SET");
            command.arg(&key).arg(bytes).arg("NX");
            let store = command.query_async::<Option<String>>(&mut conn);
            self.run_within("blob_put", BLOB_TIMEOUT, store).await?;
        }
        let mut conn = self.conn();
        let mut invocation = scripts::RECORD_ADMIN.prepare_invoke();
        invocation
            .key(self.key("admin:gen"))
            .key(self.key("admin"))
            .arg(name)
            .arg(action.as_str())
            .arg(digest.unwrap_or(""));
        self.run("admin_record", false, invocation.invoke_async(&mut conn))
            .await
    }

    /// The bytes of a put version, when the store has them.
    pub async fn admin_blob(&self, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = self.blob_conn();
        let key = self.blob_key(digest);
        let mut command = redis::cmd("GET");
        command.arg(&key);
        let fetch = command.query_async::<Option<Vec<u8>>>(&mut conn);
        self.run_within("blob_get", BLOB_TIMEOUT, fetch).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_and_refuse_what_they_do_not_know() {
        let digest = "a".repeat(64);
        assert_eq!(
            parse_entry(&format!("7 put {digest}")),
            Some(AdminEntry {
                generation: 7,
                action: AdminAction::Put,
                digest: Some(digest.clone()),
            })
        );
        assert_eq!(parse_entry("8 remove ").map(|e| e.digest), Some(None));
        assert_eq!(parse_entry("x put"), None);
        assert_eq!(parse_entry("9 format-disk"), None);
        // A digest that is no digest never becomes a key.
        assert_eq!(parse_entry("9 put ../../etc").and_then(|e| e.digest), None);
    }
}
