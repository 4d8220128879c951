//! One file per verb.

pub mod audit;
pub mod cleanup;
pub mod config;
pub mod cp;
pub mod create;
pub mod events;
pub mod exec;
pub mod expire;
pub mod extend;
pub mod files;
pub mod inspect;
pub mod keys;
pub mod ls;
pub mod pause;
pub mod ports;
pub mod project;
pub mod recreate;
pub mod rm;
pub mod run;
pub mod shell;
pub mod snapshot;
pub mod status;
pub mod template;
pub mod users;
pub mod whoami;

/// Parses `KEY=VALUE` arguments.
pub fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}
