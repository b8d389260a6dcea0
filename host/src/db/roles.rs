//! Per-caller database identity: a caller (a static token by name, an OAuth subject of
//! one issuer) mapped to a Postgres login role, so row-level security and grants apply
//! to the caller. Each source keeps a pool per role, opened on first use, at most
//! `max_pools` of them, each closed once unused for `idle_close`. The boundary is the
//! login itself: never `SET ROLE`, which a statement could undo. Every role's
//! connections are inspected like the source's own (a role that can write is refused).

use super::pool::{Db, DbConfigError, PoolSettings, RolePool};
use crate::access::{Identity, Origin};
use crate::secret::Secret;
use std::collections::HashMap;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

/// A login role and how it proves itself.
#[derive(Clone, Debug, PartialEq)]
pub struct RoleLogin {
    pub name: Arc<str>,
    /// none: as `pg_hba.conf` says without one (a certificate, trust on a socket)
    pub password: Option<Secret>,
}

/// What a caller that no entry maps gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unmapped {
    /// refused: nothing runs
    Refuse,
    /// the source's own login role (its URL's user)
    Default,
}

/// How many role pools a source keeps, their size, and when an unused one closes.
#[derive(Clone, Debug, PartialEq)]
pub struct RolePoolSettings {
    pub max_pools: usize,
    pub pool_size: usize,
    pub idle_close: Duration,
}

/// Which login role each caller's queries run as (`--caller-roles`).
#[derive(Clone, Debug)]
pub struct RoleMap {
    pub unmapped: Unmapped,
    pub pools: RolePoolSettings,
    /// by static token name
    tokens: HashMap<String, Arc<RoleLogin>>,
    /// by (issuer, subject)
    subjects: HashMap<(String, String), Arc<RoleLogin>>,
}

/// A caller no entry maps, under `unmapped = "refuse"`.
#[derive(Debug, thiserror::Error)]
#[error(
    "no database role is mapped to this caller ({caller}), and unmapped callers are refused; \
     the operator maps callers to login roles in the roles file (--caller-roles)"
)]
pub struct NotMapped {
    pub caller: String,
}

/// Why a role's pool could not be had.
#[derive(Debug, thiserror::Error)]
pub enum RolePoolError {
    #[error(
        "every one of the {0} database role pools is in use; try again shortly (the roles \
         file's max_pools bounds them)"
    )]
    Full(usize),
    #[error("the pool of role `{role}`: {error}")]
    Config {
        role: String,
        #[source]
        error: DbConfigError,
    },
}

impl RoleMap {
    pub fn new(unmapped: Unmapped, pools: RolePoolSettings) -> Self {
        Self {
            unmapped,
            pools,
            tokens: HashMap::new(),
            subjects: HashMap::new(),
        }
    }

    /// Maps the static token `name` to `login`; false if it was mapped already.
    pub fn map_token(&mut self, name: &str, login: Arc<RoleLogin>) -> bool {
        self.tokens.insert(name.to_owned(), login).is_none()
    }

    /// Maps the OAuth `subject` of `issuer` to `login`; false if it was mapped already.
    pub fn map_subject(&mut self, issuer: &str, subject: &str, login: Arc<RoleLogin>) -> bool {
        let issuer = issuer.trim_end_matches('/').to_owned();
        self.subjects
            .insert((issuer, subject.to_owned()), login)
            .is_none()
    }

    /// The role `caller`'s queries run as: `Some` its own, `None` the source's.
    pub fn login_for(
        &self,
        caller: Option<&Identity>,
    ) -> Result<Option<Arc<RoleLogin>>, NotMapped> {
        let mapped = caller.and_then(|c| match c.origin {
            Origin::Token => self.tokens.get(&*c.name),
            // Only a subject the token named: a client standing in for one is not it.
            Origin::OAuth if c.subject_claimed => c.issuer.as_deref().and_then(|issuer| {
                let issuer = issuer.trim_end_matches('/').to_owned();
                self.subjects.get(&(issuer, c.name.to_string()))
            }),
            Origin::OAuth | Origin::Anonymous | Origin::Local => None,
        });
        match (mapped, self.unmapped) {
            (Some(login), _) => Ok(Some(login.clone())),
            (None, Unmapped::Default) => Ok(None),
            (None, Unmapped::Refuse) => Err(NotMapped {
                caller: caller.map_or_else(|| "no caller".to_owned(), Identity::owner),
            }),
        }
    }
}

impl Db {
    /// The pool of `login` on this source: the same target, TLS and limits, `settings`'
    /// size, logging in as the role. Opened on first use; unused ones are closed first.
    pub fn for_role(
        &self,
        login: &RoleLogin,
        settings: &RolePoolSettings,
    ) -> Result<Db, RolePoolError> {
        let mut pools = self
            .role_pools()
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        close_idle(&mut pools, settings.idle_close, now);
        if let Some(entry) = pools.get_mut(&login.name)
            && entry.password == login.password
        {
            entry.used = now;
            return Ok(entry.db.clone());
        }
        if pools.len() >= settings.max_pools && !pools.contains_key(&login.name) {
            // The least recently used pool with nothing in flight makes room.
            let idle = pools
                .iter()
                .filter(|(_, e)| e.db.handles() == 1)
                .min_by_key(|(_, e)| e.used)
                .map(|(name, _)| name.clone());
            match idle {
                Some(name) => {
                    pools.remove(&name);
                }
                None => return Err(RolePoolError::Full(settings.max_pools)),
            }
        }
        let connector = Arc::new(
            self.connector()
                .as_user(&login.name, login.password.as_ref().map(Secret::expose)),
        );
        let db = Db::with_connector(
            connector,
            PoolSettings {
                max_size: settings.pool_size,
                ..self.settings().clone()
            },
            self.limits().clone(),
        )
        .map_err(|error| RolePoolError::Config {
            role: login.name.to_string(),
            error,
        })?;
        pools.insert(
            login.name.clone(),
            RolePool {
                password: login.password.clone(),
                db: db.clone(),
                used: now,
            },
        );
        Ok(db)
    }

    /// Closes the role pools unused for `idle_close` (a periodic sweep: no call may come
    /// to do it). How many stay open.
    pub fn close_idle_roles(&self, idle_close: Duration) -> usize {
        let mut pools = self
            .role_pools()
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        close_idle(&mut pools, idle_close, Instant::now());
        pools.len()
    }
}

/// Drops the pools unused for `idle_close` that no call holds (only the map has a
/// handle): their connections close with them.
fn close_idle(pools: &mut HashMap<Arc<str>, RolePool>, idle_close: Duration, now: Instant) {
    pools.retain(|_, e| now.duration_since(e.used) < idle_close || e.db.handles() > 1);
}

impl Db {
    /// How many role pools this source holds open now.
    pub fn role_pool_count(&self) -> usize {
        self.role_pools()
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Closes every role pool (shutdown).
    pub(super) fn close_roles(&self) {
        let pools = std::mem::take(
            &mut *self
                .role_pools()
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for pool in pools.into_values() {
            pool.db.close();
        }
    }
}
