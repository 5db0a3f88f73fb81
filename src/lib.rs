//! Estate API: a multi-tenant backend for real-estate companies, one PostgreSQL schema per
//! company. See README.md for the architecture; the layers, top to bottom:
//! `api` (HTTP) → `domain` (rules) → `auth` → `audit` → `db` (pool, tenancy, migrations).

pub mod api;
pub mod audit;
pub mod auth;
pub mod billing;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod metrics;
pub mod outbox;
pub mod rate_limit;
pub mod startup;
pub mod telemetry;
pub mod tenants;
pub mod worker;
