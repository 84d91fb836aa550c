//! `UserIdentityService.UnlinkAcsUser` and `WebhookService.UpdateWebhook` through the real
//! binary (the gRPC side of Seam's `user_identities/remove_acs_user` and `webhooks/update`):
//! unlinking takes the person's credentials through that user away (revoked in the virtual
//! access system), the user stays; an update replaces the event types; another workspace's ids
//! are NOT_FOUND; bad input is named.

use keygate_proto::v1;
use tonic::Code;

use crate::console_flow::{
    add_to_group, create_credential, create_identity, create_user, credential_req, credentials_of,
    group, held, issued, link, new_user, revoked, system,
};
use crate::grants::MOBILE;
use crate::harness::*;

type Ch = tonic::transport::Channel;

fn webhooks(ch: &Ch) -> v1::webhook_service_client::WebhookServiceClient<Ch> {
    v1::webhook_service_client::WebhookServiceClient::new(ch.clone())
}

async fn unlink(
    ch: &Ch,
    key: &str,
    identity: &str,
    user: &str,
) -> Result<v1::UserIdentity, tonic::Status> {
    identities(ch)
        .unlink_acs_user(authed(
            key,
            v1::UnlinkAcsUserRequest {
                user_identity_id: identity.into(),
                acs_user_id: user.into(),
            },
        ))
        .await
        .map(|r| r.into_inner().user_identity.expect("identity"))
}

async fn run(opts: Options, db_url: impl Fn(&DataDir) -> String) {
    let dir = DataDir::new();
    let kg = Keygate::start(
        &dir.0,
        &Options {
            extra_args: [
                "--sandbox-provision-delay-ms",
                "20",
                "--webhook-allow-loopback",
                "true",
            ]
            .map(String::from)
            .to_vec(),
            ..opts
        },
    );
    let store = keygate_store::open(&db_url(&dir)).expect("open store");
    let ch = kg.channel().await;
    let (_ws, key) = create_workspace(&ch, "Riverside", true).await;
    let (_other, other_key) = create_workspace(&ch, "Other", true).await;

    // --- UpdateWebhook ---------------------------------------------------------------------
    let w = webhooks(&ch)
        .create_webhook(authed(
            &key,
            v1::CreateWebhookRequest {
                url: "http://127.0.0.1:9/hook".into(),
                event_types: vec!["access_grant.created".into()],
                ..Default::default()
            },
        ))
        .await
        .expect("create webhook")
        .into_inner()
        .webhook
        .expect("webhook");
    let update = |types: &[&str], id: &str| v1::UpdateWebhookRequest {
        webhook_id: id.into(),
        event_types: types.iter().map(|t| (*t).to_owned()).collect(),
    };
    let updated = webhooks(&ch)
        .update_webhook(authed(
            &key,
            update(
                &["access_method.issued", "access_grant.deleted"],
                &w.webhook_id,
            ),
        ))
        .await
        .expect("update")
        .into_inner()
        .webhook
        .expect("webhook");
    assert_eq!(
        updated.event_types,
        vec!["access_method.issued", "access_grant.deleted"]
    );
    assert_eq!(updated.url, w.url);
    let s = assert_fails(
        webhooks(&ch)
            .update_webhook(authed(&key, update(&["door.sang"], &w.webhook_id)))
            .await,
        Code::InvalidArgument,
        "INVALID_FIELD",
    );
    assert!(format!("{s:?}").contains("event_types[0]"), "{s:?}");
    assert_fails(
        webhooks(&ch)
            .update_webhook(authed(&other_key, update(&[], &w.webhook_id)))
            .await,
        Code::NotFound,
        "WEBHOOK_NOT_FOUND",
    );
    let got = webhooks(&ch)
        .get_webhook(authed(
            &key,
            v1::GetWebhookRequest {
                webhook_id: w.webhook_id.clone(),
            },
        ))
        .await
        .expect("get")
        .into_inner()
        .webhook
        .expect("webhook");
    assert_eq!(
        got.event_types, updated.event_types,
        "refusals changed nothing"
    );

    // --- UnlinkAcsUser -----------------------------------------------------------------------
    let salto_ks = system(&ch, &key, "virtual_salto_ks").await;
    let residents = group(&ch, &key, &salto_ks, "All Residents").await;
    let jane = create_user(&ch, &key, new_user("unlink-jane", &salto_ks, "Jane Doe")).await;
    add_to_group(&ch, &key, &jane.acs_user_id, &residents.acs_access_group_id)
        .await
        .expect("add to group");
    let person = create_identity(&ch, &key, "Jane Doe").await;
    let other_person = create_identity(&ch, &key, "John Roe").await;
    link(&ch, &key, &person.user_identity_id, &jane.acs_user_id)
        .await
        .expect("link");
    let c = create_credential(&ch, &key, credential_req(&jane.acs_user_id, MOBILE, &[]))
        .await
        .expect("credential");
    let c = issued(&ch, &key, &jane.acs_user_id, &c.acs_credential_id).await;
    assert!(held(&*store, &salto_ks, &c.access_method_id).await);

    // Another workspace: NOT_FOUND. Linked to another identity: FAILED_PRECONDITION.
    assert_fails(
        unlink(&ch, &other_key, &person.user_identity_id, &jane.acs_user_id).await,
        Code::NotFound,
        "USER_IDENTITY_NOT_FOUND",
    );
    assert_fails(
        unlink(&ch, &key, &other_person.user_identity_id, &jane.acs_user_id).await,
        Code::FailedPrecondition,
        "ACS_USER_NOT_LINKED",
    );
    assert_fails(
        unlink(&ch, &key, &person.user_identity_id, "not-an-id").await,
        Code::NotFound,
        "ACS_USER_NOT_FOUND",
    );
    assert!(
        held(&*store, &salto_ks, &c.access_method_id).await,
        "refusals took nothing"
    );

    let after = unlink(&ch, &key, &person.user_identity_id, &jane.acs_user_id)
        .await
        .expect("unlink");
    assert!(after.acs_user_ids.is_empty());
    assert!(
        credentials_of(&ch, &key, &jane.acs_user_id)
            .await
            .is_empty()
    );
    revoked(&*store, &salto_ks, &c.access_method_id).await;
    // The user stays; no credential is issued through it until it is linked again.
    assert_fails(
        create_credential(&ch, &key, credential_req(&jane.acs_user_id, MOBILE, &[])).await,
        Code::FailedPrecondition,
        "ACS_USER_NOT_LINKED",
    );
    unlink(&ch, &key, &person.user_identity_id, &jane.acs_user_id)
        .await
        .expect("unlinking again changes nothing");
    let relinked = link(&ch, &key, &other_person.user_identity_id, &jane.acs_user_id)
        .await
        .expect("link to another person");
    assert_eq!(relinked.acs_user_ids, vec![jane.acs_user_id.clone()]);
}

fn sqlite_url(dir: &DataDir) -> String {
    format!("sqlite://{}", dir.0.join("keygate.db").display())
}

#[tokio::test]
async fn unlink_and_hook_updates_sqlite() {
    run(Options::with_admin(), sqlite_url).await
}

#[tokio::test]
async fn unlink_and_hook_updates_postgres_redis() {
    let opts = Options::postgres_redis().await;
    let url = opts.database_url.clone().expect("database url");
    run(opts, move |_| url.clone()).await
}
