//! Domain rules with no I/O: names, permissions, version ordering, token formats.
pub mod assets;
pub mod events;
pub mod names;
pub mod permissions;
pub mod retention;
pub mod trust;
pub mod version;
pub mod webhooks;
