//! The default health component: database reachability (ping latency) and pool
//! saturation, read through the host's `pool` import.

use health_sdk::{CheckResult as Check, Guest, Report, State, pool};

/// A ping slower than this marks the database `degraded` rather than `ok`.
const SLOW_PING_MICROS: u64 = 250_000;

struct Health;

impl Guest for Health {
    fn check() -> Report {
        let checks = vec![database(), pool_saturation()];
        let state = checks
            .iter()
            .map(|c| c.state)
            .max_by_key(|s| severity(*s))
            .unwrap_or(State::Ok);
        Report { state, checks }
    }
}

fn database() -> Check {
    match pool::ping() {
        Ok(micros) if micros > SLOW_PING_MICROS => Check {
            name: "database".into(),
            state: State::Degraded,
            detail: format!("ping took {} ms", micros / 1000),
            micros,
        },
        Ok(micros) => Check {
            name: "database".into(),
            state: State::Ok,
            detail: "ping ok".into(),
            micros,
        },
        Err(reason) => Check {
            name: "database".into(),
            state: State::Down,
            detail: reason,
            micros: 0,
        },
    }
}

fn pool_saturation() -> Check {
    let s = pool::status();
    let in_use = s.size.saturating_sub(s.idle);
    let detail = format!(
        "{in_use} in use, {} idle, {} waiting, max {}",
        s.idle, s.waiting, s.max
    );
    let state = if s.waiting > 0 && in_use >= s.max {
        State::Degraded
    } else {
        State::Ok
    };
    Check {
        name: "pool".into(),
        state,
        detail,
        micros: 0,
    }
}

fn severity(state: State) -> u8 {
    match state {
        State::Ok => 0,
        State::Degraded => 1,
        State::Down => 2,
    }
}

health_sdk::bindings::export!(Health with_types_in health_sdk::bindings);
