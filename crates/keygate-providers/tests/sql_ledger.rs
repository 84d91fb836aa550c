//! The virtual systems' ledger on both store databases (PostgreSQL at
//! `KEYGATE_TEST_DATABASE_URL`, default `postgres://postgres@127.0.0.1:5432/postgres`).

use keygate_domain::action::UnlockJob;
use keygate_domain::ids::{
    AccessMethodId, AccessSystemId, ActionAttemptId, EntranceId, UserIdentityId, WorkspaceId,
};
use keygate_domain::model::{AccessSystem, SandboxCredential};
use keygate_providers::virtual_system::Ledger;
use keygate_providers::{SqlLedger, sandbox};
use keygate_store::StorePool;
use keygate_store::testdb::TestDb;
use time::OffsetDateTime;

/// A time in Unix microseconds, the precision the ledger keeps.
fn at(us: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1_000).expect("a valid time")
}

fn ledger_of(db: &TestDb) -> SqlLedger {
    match db.store.pool() {
        StorePool::Postgres(pool) => SqlLedger::postgres(pool),
        StorePool::Sqlite(pool) => SqlLedger::sqlite(pool),
    }
}

fn system(ws: WorkspaceId) -> AccessSystem {
    let new = sandbox::new_system(sandbox::SANDBOX_SYSTEM_TYPES[0], None, None)
        .expect("a sandbox system type");
    AccessSystem {
        id: AccessSystemId::new(),
        workspace_id: ws,
        name: new.name,
        external_type: new.external_type,
        system_type: new.system_type,
        is_virtual: new.is_virtual,
        time_zone: new.time_zone,
        capabilities: new.capabilities,
        created_at: keygate_domain::model::now(),
        health: Default::default(),
        settings: Default::default(),
    }
}

async fn credentials_keep_their_ids_and_follow_the_latest_schedule(ledger: SqlLedger) {
    let ws = WorkspaceId::new();
    let (sys, method) = (AccessSystemId::new(), AccessMethodId::new());
    let first = SandboxCredential {
        acs_system_id: sys,
        access_method_id: method,
        workspace_id: ws,
        provider_user_id: "user-1".into(),
        credential_id: "cred-1".into(),
        entrance_ids: vec![EntranceId::new()],
        code: Some("1234".into()),
        starts_at: Some(at(1_767_225_600_000_000)),
        ends_at: None,
    };
    assert_eq!(ledger.get(sys, method).await.expect("get"), None);
    assert_eq!(ledger.put(&first).await.expect("put"), first);

    // A repeat keeps the first ids and code; entrances and schedule follow it.
    let again = SandboxCredential {
        provider_user_id: "user-2".into(),
        credential_id: "cred-2".into(),
        entrance_ids: vec![EntranceId::new(), EntranceId::new()],
        code: Some("9999".into()),
        starts_at: None,
        ends_at: Some(at(1_769_949_000_000_001)),
        ..first.clone()
    };
    let stored = ledger.put(&again).await.expect("put again");
    assert_eq!(
        stored,
        SandboxCredential {
            entrance_ids: again.entrance_ids.clone(),
            starts_at: None,
            ends_at: again.ends_at,
            ..first.clone()
        }
    );
    assert_eq!(ledger.get(sys, method).await.expect("get"), Some(stored));
    assert_eq!(ledger.count_credentials(ws).await.expect("count"), 1);
    assert_eq!(
        ledger
            .count_credentials(WorkspaceId::new())
            .await
            .expect("count"),
        0
    );

    ledger.remove(sys, method).await.expect("remove");
    ledger
        .remove(sys, method)
        .await
        .expect("removing twice is fine");
    assert_eq!(ledger.get(sys, method).await.expect("get"), None);
    assert_eq!(ledger.count_credentials(ws).await.expect("count"), 0);
}

async fn unlocks_count_once_per_attempt(ledger: SqlLedger) {
    let ws = WorkspaceId::new();
    let system = system(ws);
    let job = UnlockJob {
        action_attempt_id: ActionAttemptId::new(),
        acs_system_id: system.id,
        acs_entrance_id: EntranceId::new(),
        user_identity_id: Some(UserIdentityId::new()),
        instant_key_id: None,
        access_grant_id: None,
        access_method_id: None,
        expires_at: None,
    };
    ledger.unlocked(&system, &job).await.expect("unlock");
    ledger
        .unlocked(&system, &job)
        .await
        .expect("the same attempt again");
    assert_eq!(ledger.count_unlocks(ws).await.expect("count"), 1);
    let other = UnlockJob {
        action_attempt_id: ActionAttemptId::new(),
        ..job
    };
    ledger.unlocked(&system, &other).await.expect("unlock");
    assert_eq!(ledger.count_unlocks(ws).await.expect("count"), 2);
}

#[tokio::test]
async fn sqlite_credentials() {
    let db = TestDb::sqlite().await;
    credentials_keep_their_ids_and_follow_the_latest_schedule(ledger_of(&db)).await;
}

#[tokio::test]
async fn postgres_credentials() {
    let db = TestDb::postgres().await;
    credentials_keep_their_ids_and_follow_the_latest_schedule(ledger_of(&db)).await;
}

#[tokio::test]
async fn sqlite_unlocks() {
    let db = TestDb::sqlite().await;
    unlocks_count_once_per_attempt(ledger_of(&db)).await;
}

#[tokio::test]
async fn postgres_unlocks() {
    let db = TestDb::postgres().await;
    unlocks_count_once_per_attempt(ledger_of(&db)).await;
}
