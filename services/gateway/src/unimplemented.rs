//! Services of the contract that later issues implement. The generated default stubs answer
//! UNIMPLEMENTED for every RPC; this type only opts each service in.

use keygate_proto::v1;

/// Stands in for a service that is not served yet.
#[derive(Clone, Copy, Debug, Default)]
pub struct Unimplemented;

#[tonic::async_trait]
impl v1::acs_user_service_server::AcsUserService for Unimplemented {}
#[tonic::async_trait]
impl v1::instant_key_service_server::InstantKeyService for Unimplemented {}
#[tonic::async_trait]
impl v1::webhook_service_server::WebhookService for Unimplemented {}
