//! `--overload`: goodput at twice the capacity, with load shedding fixed (a plain in-flight limit
//! of 1024, as before the adaptive limit) and adaptive (the default), each on a server of its
//! own in one run.
//!
//! The capacity C is `CreateAccessGrant`s per second from 32 closed-loop clients (each waits for
//! its answer before the next call) for 5 s, on a server of its own with the fixed limit (which
//! refuses nothing at that load). Then, on a fresh server each, calls arrive open loop (on a
//! fixed schedule, whatever the answers) at 2 × C for 10 s, each with a 1 s deadline
//! (`grpc-timeout`), as a client with a deadline sends them. Goodput is the calls answered OK
//! per second of that phase; the refusals are timed from call to answer.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keygate_proto::v1;
use tonic::transport::Channel;

use crate::{authed, channels, doors, drive, mobile_grant, ms, percentile, start_with};

const CLIENTS: usize = 32;
const CAPACITY_SECS: u64 = 5;
const OVERLOAD_SECS: u64 = 10;
const DEADLINE: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Outcomes {
    ok: Vec<Duration>,
    refused: Vec<Duration>,
    deadline: Vec<Duration>,
    other: Vec<(tonic::Code, Duration)>,
    /// The first message of each other code.
    messages: std::collections::BTreeMap<String, String>,
}

async fn create(
    ch: Channel,
    key: String,
    door: String,
) -> (Result<(), (tonic::Code, String)>, Duration) {
    let t = Instant::now();
    let mut req = authed(&key, mobile_grant(&[door]));
    req.set_timeout(DEADLINE);
    let r = v1::access_grant_service_client::AccessGrantServiceClient::new(ch)
        .create_access_grant(req)
        .await;
    (
        r.map(|_| ())
            .map_err(|s| (s.code(), s.message().to_owned())),
        t.elapsed(),
    )
}

struct Phase {
    capacity: f64,
    offered: f64,
    out: Outcomes,
}

/// The capacity: closed loop on a server with a fixed limit (nothing refused).
async fn capacity(postgres: bool) -> anyhow::Result<f64> {
    let h = start_with(postgres, 0, 1024, false).await?;
    let door = doors(&h, &["virtual_salto_ks"]).await?[0].0.clone();
    let chans = channels(h.addr.clone(), 4).await?;
    let (key, d, c) = (h.key.clone(), door.clone(), chans.clone());
    let (capacity, _) = drive(CLIENTS, Duration::from_secs(CAPACITY_SECS), move |i| {
        let (ch, key, door) = (c[i % c.len()].clone(), key.clone(), d.clone());
        async move { create(ch, key, door).await.0.is_ok() }
    })
    .await;
    Ok(capacity)
}

/// Twice `capacity`, open loop, on a fresh server with the limit fixed or adaptive.
async fn measure(postgres: bool, adaptive: bool, capacity: f64) -> anyhow::Result<Phase> {
    let h = start_with(postgres, 0, 1024, adaptive).await?;
    let door = doors(&h, &["virtual_salto_ks"]).await?[0].0.clone();
    let chans = channels(h.addr.clone(), 4).await?;
    let offered = 2.0 * capacity;
    let gap = Duration::from_secs_f64(1.0 / offered.max(1.0));
    let out = Arc::new(Mutex::new(Outcomes::default()));
    let start = Instant::now();
    let end = start + Duration::from_secs(OVERLOAD_SECS);
    let mut tasks = Vec::new();
    let mut next = start;
    let mut n = 0usize;
    while next < end {
        tokio::time::sleep_until(next.into()).await;
        let (ch, key, door, out) = (
            chans[n % chans.len()].clone(),
            h.key.clone(),
            door.clone(),
            out.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let (r, took) = create(ch, key, door).await;
            let Ok(mut o) = out.lock() else { return };
            match r {
                Ok(()) => o.ok.push(took),
                Err((tonic::Code::ResourceExhausted, _)) => o.refused.push(took),
                // The client's own deadline (tonic answers `CANCELLED` "Timeout expired")
                // and the server's are both a call that came too late.
                Err((tonic::Code::DeadlineExceeded | tonic::Code::Cancelled, _)) => {
                    o.deadline.push(took)
                }
                Err((code, message)) => {
                    o.messages.entry(format!("{code:?}")).or_insert(message);
                    o.other.push((code, took));
                }
            }
        }));
        n += 1;
        next += gap;
    }
    for t in tasks {
        let _ = t.await;
    }
    let out = std::mem::take(&mut *out.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
    Ok(Phase {
        capacity,
        offered,
        out,
    })
}

fn report(name: &str, p: &mut Phase) {
    let secs = OVERLOAD_SECS as f64;
    let o = &mut p.out;
    o.ok.sort();
    o.refused.sort();
    o.deadline.sort();
    let goodput = o.ok.len() as f64 / secs;
    println!("\n{name}");
    println!(
        "   capacity (closed loop, {CLIENTS} clients, {CAPACITY_SECS}s, fixed limit, a server of its own): {:.0} grants/s",
        p.capacity
    );
    println!(
        "   offered open loop at 2×: {:.0} calls/s for {OVERLOAD_SECS}s ({} calls), deadline {} ms",
        p.offered,
        o.ok.len() + o.refused.len() + o.deadline.len() + o.other.len(),
        DEADLINE.as_millis()
    );
    println!(
        "   goodput {goodput:.0} grants/s = {:.2} × capacity (target ≥ 0.90 → {})",
        goodput / p.capacity,
        if goodput >= 0.9 * p.capacity {
            "met"
        } else {
            "NOT met"
        }
    );
    if !o.ok.is_empty() {
        println!(
            "   OK: {}  p50 {:.1} ms  p99 {:.1} ms",
            o.ok.len(),
            ms(percentile(&o.ok, 0.5)),
            ms(percentile(&o.ok, 0.99))
        );
    }
    if !o.refused.is_empty() {
        let p99 = ms(percentile(&o.refused, 0.99));
        println!(
            "   refused RESOURCE_EXHAUSTED: {}  p50 {:.2} ms  p99 {p99:.2} ms  max {:.2} ms (target p99 ≤ 5 ms → {})",
            o.refused.len(),
            ms(percentile(&o.refused, 0.5)),
            ms(percentile(&o.refused, 1.0)),
            if p99 <= 5.0 { "met" } else { "NOT met" }
        );
    } else {
        println!("   refused RESOURCE_EXHAUSTED: 0");
    }
    let mut by_code = std::collections::BTreeMap::<String, usize>::new();
    for (code, _) in &o.other {
        *by_code.entry(format!("{code:?}")).or_default() += 1;
    }
    println!(
        "   past the deadline (DEADLINE_EXCEEDED, or CANCELLED by the client's timer): {}   other errors: {} {by_code:?}",
        o.deadline.len(),
        o.other.len()
    );
    for (code, message) in &o.messages {
        println!("   first {code}: {message}");
    }
}

pub async fn run(postgres: bool) -> anyhow::Result<()> {
    println!(
        "keygate-load --overload: store = {}, {} cores; CreateAccessGrant (a new person, a mobile key on one door)",
        if postgres { "postgres" } else { "sqlite" },
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let capacity = capacity(postgres).await?;
    let mut fixed = measure(postgres, false, capacity).await?;
    report(
        "A. fixed in-flight limit (1024, KEYGATE_ADAPTIVE_IN_FLIGHT=false: as before)",
        &mut fixed,
    );
    let mut adaptive = measure(postgres, true, capacity).await?;
    report(
        "B. adaptive in-flight limit (at most 1024; the default)",
        &mut adaptive,
    );
    Ok(())
}
