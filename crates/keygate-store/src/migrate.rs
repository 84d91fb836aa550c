//! Embedded migrations, one directory per dialect. `ignore_missing` lets an older replica run
//! against a schema a newer one already migrated (rolling upgrades).

use std::borrow::Cow;

use sqlx::SqlStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// The schema version this build expects.
pub const SCHEMA_VERSION: i64 = 15;

fn migrator(files: &'static [(i64, &'static str, &'static str)]) -> Migrator {
    Migrator {
        migrations: Cow::Owned(
            files
                .iter()
                .map(|(version, description, sql)| {
                    Migration::new(
                        *version,
                        Cow::Borrowed(*description),
                        MigrationType::Simple,
                        SqlStr::from_static(sql),
                        false,
                    )
                })
                .collect(),
        ),
        ignore_missing: true,
        ..Migrator::DEFAULT
    }
}

pub(crate) fn postgres() -> Migrator {
    migrator(&[
        (
            1,
            "initial",
            include_str!("../../../migrations/postgres/0001_initial.sql"),
        ),
        (
            2,
            "access_grants",
            include_str!("../../../migrations/postgres/0002_access_grants.sql"),
        ),
        (
            3,
            "action_attempts",
            include_str!("../../../migrations/postgres/0003_action_attempts.sql"),
        ),
        (
            4,
            "sandbox_ledger",
            include_str!("../../../migrations/postgres/0004_sandbox_ledger.sql"),
        ),
        (
            5,
            "deletion",
            include_str!("../../../migrations/postgres/0005_deletion.sql"),
        ),
        (
            6,
            "grant_updates",
            include_str!("../../../migrations/postgres/0006_grant_updates.sql"),
        ),
        (
            7,
            "expiry",
            include_str!("../../../migrations/postgres/0007_expiry.sql"),
        ),
        (
            8,
            "webhooks",
            include_str!("../../../migrations/postgres/0008_webhooks.sql"),
        ),
        (
            9,
            "trace_context",
            include_str!("../../../migrations/postgres/0009_trace_context.sql"),
        ),
        (
            10,
            "instant_keys",
            include_str!("../../../migrations/postgres/0010_instant_keys.sql"),
        ),
        (
            11,
            "deliveries",
            include_str!("../../../migrations/postgres/0011_deliveries.sql"),
        ),
        (
            12,
            "acs_users",
            include_str!("../../../migrations/postgres/0012_acs_users.sql"),
        ),
        (
            13,
            "job_fencing",
            include_str!("../../../migrations/postgres/0013_job_fencing.sql"),
        ),
        (
            14,
            "connections",
            include_str!("../../../migrations/postgres/0014_connections.sql"),
        ),
        (
            15,
            "vendor_events",
            include_str!("../../../migrations/postgres/0015_vendor_events.sql"),
        ),
    ])
}

pub(crate) fn sqlite() -> Migrator {
    migrator(&[
        (
            1,
            "initial",
            include_str!("../../../migrations/sqlite/0001_initial.sql"),
        ),
        (
            2,
            "access_grants",
            include_str!("../../../migrations/sqlite/0002_access_grants.sql"),
        ),
        (
            3,
            "action_attempts",
            include_str!("../../../migrations/sqlite/0003_action_attempts.sql"),
        ),
        (
            4,
            "sandbox_ledger",
            include_str!("../../../migrations/sqlite/0004_sandbox_ledger.sql"),
        ),
        (
            5,
            "deletion",
            include_str!("../../../migrations/sqlite/0005_deletion.sql"),
        ),
        (
            6,
            "grant_updates",
            include_str!("../../../migrations/sqlite/0006_grant_updates.sql"),
        ),
        (
            7,
            "expiry",
            include_str!("../../../migrations/sqlite/0007_expiry.sql"),
        ),
        (
            8,
            "webhooks",
            include_str!("../../../migrations/sqlite/0008_webhooks.sql"),
        ),
        (
            9,
            "trace_context",
            include_str!("../../../migrations/sqlite/0009_trace_context.sql"),
        ),
        (
            10,
            "instant_keys",
            include_str!("../../../migrations/sqlite/0010_instant_keys.sql"),
        ),
        (
            11,
            "deliveries",
            include_str!("../../../migrations/sqlite/0011_deliveries.sql"),
        ),
        (
            12,
            "acs_users",
            include_str!("../../../migrations/sqlite/0012_acs_users.sql"),
        ),
        (
            13,
            "job_fencing",
            include_str!("../../../migrations/sqlite/0013_job_fencing.sql"),
        ),
        (
            14,
            "connections",
            include_str!("../../../migrations/sqlite/0014_connections.sql"),
        ),
        (
            15,
            "vendor_events",
            include_str!("../../../migrations/sqlite/0015_vendor_events.sql"),
        ),
    ])
}
