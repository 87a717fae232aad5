//! Depot: an artifact gateway. See README.md for the API and configuration.

pub mod api;
pub mod app;
pub mod auth;
pub mod blob;
pub mod cache;
pub mod cleanup;
pub mod client;
pub mod config;
pub mod connections;
pub mod digest;
pub mod domain;
pub mod download;
pub mod dto;
pub mod error;
pub mod meta;
pub mod observability;
pub mod oidc;
pub mod ops;
pub mod router;
pub mod server;
pub mod signing;
