//! One file per resource.

pub mod audit;
pub mod auth;
pub mod events;
pub mod exec;
pub mod files;
pub mod health;
pub mod maintenance;
pub mod openapi;
pub mod ports;
pub mod profiles;
pub mod projects;
pub mod pty;
pub mod sandboxes;
pub mod snapshots;
pub mod status;
pub mod templates;
pub mod users;
pub mod web;
