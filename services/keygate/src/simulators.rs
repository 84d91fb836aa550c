//! The vendor simulators `keygate serve` runs for sandbox workspaces (`KEYGATE_SIMULATORS`):
//! each vendor's simulator from `keygate-simulators`, served on its own ephemeral port of
//! 127.0.0.1 (never on the public HTTP port), with the address and credentials the use cases fill
//! in when a sandbox system is connected to it or called ([`keygate_app::simulated`]).
//!
//! Their state is this process's memory: it starts anew at every start (the reconciler then sees
//! what the record says and the simulator lacks, and issues it again), and replicas each run
//! their own, seeded alike (same places, doors and groups), so a sandbox on several replicas
//! works but each replica's simulator holds only what that replica wrote.

use std::collections::BTreeMap;

use anyhow::Context as _;
use keygate_app::simulated::{SimulatedVendor, SimulatedVendors};
use keygate_simulators::{brivo, kisi};

use crate::config::Simulator;

/// Which simulators run: as configured, else both for the embedded store and none otherwise.
pub fn chosen(configured: Option<&[Simulator]>, embedded: bool) -> Vec<Simulator> {
    match configured {
        Some(list) if list.contains(&Simulator::None) => Vec::new(),
        Some(list) => {
            let mut v = list.to_vec();
            v.dedup();
            v
        }
        None if embedded => vec![Simulator::Kisi, Simulator::Brivo],
        None => Vec::new(),
    }
}

/// Starts `which` and says how to reach each.
pub async fn start(which: &[Simulator]) -> anyhow::Result<SimulatedVendors> {
    let mut vendors = SimulatedVendors::default();
    for s in which {
        match s {
            Simulator::Kisi => {
                let addr = kisi::KisiSimulator::new()
                    .serve()
                    .await
                    .context("starting the Kisi simulator")?;
                vendors.insert(
                    keygate_providers::kisi::SYSTEM_TYPE,
                    SimulatedVendor {
                        settings: BTreeMap::from([(
                            "endpoint".to_owned(),
                            format!("http://{addr}"),
                        )]),
                        credentials: BTreeMap::from([(
                            "api_key".to_owned(),
                            kisi::API_KEY.to_owned(),
                        )]),
                    },
                );
                tracing::info!(%addr, "Kisi simulator running for sandbox workspaces");
            }
            Simulator::Brivo => {
                let addr = brivo::BrivoSimulator::new()
                    .serve()
                    .await
                    .context("starting the Brivo simulator")?;
                vendors.insert(
                    keygate_providers::brivo::SYSTEM_TYPE,
                    SimulatedVendor {
                        settings: BTreeMap::from([
                            (
                                "endpoint".to_owned(),
                                format!("http://{addr}{}", brivo::API_BASE),
                            ),
                            (
                                "auth_endpoint".to_owned(),
                                format!("http://{addr}{}", brivo::TOKEN_PATH),
                            ),
                        ]),
                        credentials: BTreeMap::from([
                            ("client_id".to_owned(), brivo::CLIENT_ID.to_owned()),
                            ("client_secret".to_owned(), brivo::CLIENT_SECRET.to_owned()),
                            ("username".to_owned(), brivo::USERNAME.to_owned()),
                            ("password".to_owned(), brivo::PASSWORD.to_owned()),
                            ("api_key".to_owned(), brivo::API_KEY.to_owned()),
                        ]),
                    },
                );
                tracing::info!(%addr, "Brivo simulator running for sandbox workspaces");
            }
            Simulator::None => {}
        }
    }
    Ok(vendors)
}
