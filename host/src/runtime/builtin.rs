//! The default components, built from `components/` by `build.rs` and embedded in the
//! binary so `cargo install` gives a working server.

include!(concat!(env!("OUT_DIR"), "/builtin.rs"));
