//! Load shedding that keeps latency where it was: a limit on the calls in flight that follows
//! how slow calls have become, so that past the server's capacity the excess is refused at
//! once (with a time to retry) instead of queueing behind the work the server can do.
//!
//! The limit adapts as a gradient on latency (after the "Gradient2" limiter of Netflix's
//! concurrency-limits): each window of completed calls compares how long they took with how
//! long calls of the same method usually take. While they take about as long (up to
//! [`TOLERANCE`] times), the limit grows by a small queue allowance; when they are slower, it
//! comes down in proportion, smoothed; when they are more than twice as slow as tolerated (a
//! queue built up), it halves at once from the calls that were in flight. Never below
//! [`MIN_LIMIT`] nor above the configured maximum. Each
//! method keeps its own usual latency (a slow moving average), so a shift in the mix of calls
//! (more writes than reads) is not mistaken for overload. A window in which fewer than half the
//! allowed calls were in flight says nothing about the limit and changes nothing.
//!
//! With `adaptive` off the limit is the fixed maximum, as a plain semaphore.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The limit never goes below this many calls in flight.
pub const MIN_LIMIT: usize = 16;
/// Calls of a window may take up to this many times their usual latency before the limit
/// shrinks.
pub const TOLERANCE: f64 = 2.0;
/// A window closes after this many completions, or [`WINDOW_TIME`], whichever comes later.
const WINDOW_SAMPLES: u32 = 50;
const WINDOW_TIME: Duration = Duration::from_millis(200);
/// A method's usual latency follows its latency over about this long.
const USUAL_TIME: Duration = Duration::from_secs(30);
/// A new limit counts for this share against the old one.
const SMOOTHING: f64 = 0.25;
/// Methods whose usual latency is remembered (the rest share one entry).
const METHODS: usize = 256;
/// The time to retry a refused call: the calls' recent latency times this, within bounds.
const RETRY_FACTOR: u32 = 4;
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// The calls in flight through one surface and how many may be.
pub struct ConcurrencyLimit {
    max: usize,
    adaptive: bool,
    in_flight: AtomicUsize,
    /// The most calls in flight seen in the current window.
    peak: AtomicUsize,
    /// The current limit (for the fast path; the gradient state holds it as a float).
    limit: AtomicUsize,
    state: Mutex<Gradient>,
}

struct Gradient {
    limit: f64,
    /// Each method's usual latency, and its calls in the window.
    usual: HashMap<String, Usual>,
    window_started: Instant,
    /// Sum of (latency / usual latency) over the window's calls, and their count.
    slowdown_sum: f64,
    samples: u32,
    latency_sum: f64,
    /// The last closed window's mean latency, seconds (for the time to retry).
    recent_latency: f64,
}

struct Usual {
    /// Seconds.
    latency: f64,
    sum: f64,
    n: u32,
}

/// A call's place in flight; dropping it reports the call's latency.
pub struct InFlight {
    owner: Arc<ConcurrencyLimit>,
    method: String,
    started: Instant,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.owner
            .completed(&self.method, self.started.elapsed(), Instant::now());
    }
}

impl ConcurrencyLimit {
    /// At most `max` calls in flight (at least 1); with `adaptive`, fewer while calls are slower
    /// than usual.
    pub fn new(max: usize, adaptive: bool) -> Arc<Self> {
        let max = max.max(1);
        Arc::new(Self {
            max,
            adaptive,
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            limit: AtomicUsize::new(max),
            state: Mutex::new(Gradient {
                limit: max as f64,
                usual: HashMap::new(),
                window_started: Instant::now(),
                slowdown_sum: 0.0,
                samples: 0,
                latency_sum: 0.0,
                recent_latency: 0.0,
            }),
        })
    }

    /// The calls that may be in flight now.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// The calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A place for a call of `method`, or, at the limit, how long the caller should wait before
    /// trying again. Never waits.
    pub fn try_acquire(self: &Arc<Self>, method: &str) -> Result<InFlight, Duration> {
        let limit = self.limit();
        let mut current = self.in_flight.load(Ordering::Relaxed);
        loop {
            if current >= limit {
                return Err(self.retry_after());
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        if self.adaptive {
            // No lock on the way in: the peak is an atomic.
            self.peak.fetch_max(current + 1, Ordering::Relaxed);
        }
        Ok(InFlight {
            owner: self.clone(),
            method: method.to_owned(),
            started: Instant::now(),
        })
    }

    fn retry_after(&self) -> Duration {
        let recent = self
            .state
            .lock()
            .map(|s| s.recent_latency)
            .unwrap_or_default();
        Duration::from_secs_f64(recent)
            .saturating_mul(RETRY_FACTOR)
            .clamp(RETRY_MIN, RETRY_MAX)
    }

    fn completed(&self, method: &str, latency: Duration, now: Instant) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        if !self.adaptive {
            return;
        }
        let Ok(mut s) = self.state.lock() else {
            return; // A poisoned lock leaves the limit where it was.
        };
        let rtt = latency.as_secs_f64().max(1e-6);
        let known = s.usual.len();
        let name = if known < METHODS || s.usual.contains_key(method) {
            method
        } else {
            ""
        };
        let m = s.usual.entry(name.to_owned()).or_insert(Usual {
            latency: rtt,
            sum: 0.0,
            n: 0,
        });
        m.sum += rtt;
        m.n += 1;
        let slowdown = rtt / m.latency;
        s.slowdown_sum += slowdown;
        s.latency_sum += rtt;
        s.samples += 1;
        let took = now.saturating_duration_since(s.window_started);
        if s.samples < WINDOW_SAMPLES || took < WINDOW_TIME {
            return;
        }
        let mean_slowdown = s.slowdown_sum / f64::from(s.samples);
        s.recent_latency = s.latency_sum / f64::from(s.samples);
        // Each method's usual latency moves towards this window's, over about USUAL_TIME; ten
        // times slower from a window past the tolerance, so that overload is not learned as
        // the new usual while it lasts.
        let mut weight = (took.as_secs_f64() / USUAL_TIME.as_secs_f64()).min(1.0);
        if mean_slowdown > TOLERANCE {
            weight /= 10.0;
        }
        for u in s.usual.values_mut() {
            if u.n > 0 {
                let mean = u.sum / f64::from(u.n);
                u.latency += (mean - u.latency) * weight;
                u.sum = 0.0;
                u.n = 0;
            }
        }
        let limit = s.limit;
        let peak = self
            .peak
            .swap(self.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
        s.window_started = now;
        s.slowdown_sum = 0.0;
        s.latency_sum = 0.0;
        s.samples = 0;
        if mean_slowdown > TOLERANCE && peak <= MIN_LIMIT {
            return; // A few slow calls are not a queue: nothing to shed.
        }
        let next = if mean_slowdown > 2.0 * TOLERANCE {
            // Far slower than tolerated (a queue built up): down at once, from the calls that
            // were in flight, by half, so the queue is cut within a few windows rather than
            // served late.
            limit.min(peak as f64) * 0.5
        } else if mean_slowdown > TOLERANCE {
            // Slower than tolerated: down in proportion, smoothed (one slow window is noise).
            let base = limit.min(peak as f64);
            base * (1.0 - SMOOTHING) + base * (TOLERANCE / mean_slowdown) * SMOOTHING
        } else if (peak as f64) < limit / 2.0 {
            // Fast enough, but with too few calls in flight to say the limit could be higher.
            return;
        } else {
            // Within tolerance: up by a queue allowance.
            limit + limit.sqrt().max(4.0) * SMOOTHING * 2.0
        }
        .clamp(MIN_LIMIT.min(self.max) as f64, self.max as f64);
        s.limit = next;
        self.limit.store(next as usize, Ordering::Relaxed);
        keygate_telemetry::metrics::concurrency_limit(next as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Completes `n` calls of `method` that took `rtt`, `gap` apart, from `start`.
    fn feed(
        l: &Arc<ConcurrencyLimit>,
        method: &str,
        n: usize,
        rtt: Duration,
        start: Instant,
        gap: Duration,
    ) -> Instant {
        let mut now = start;
        for _ in 0..n {
            let p = l.try_acquire(method);
            // Hold the place so the window sees the calls in flight, then report by hand.
            if let Ok(p) = p {
                std::mem::forget(p);
            }
            now += gap;
            l.completed(method, rtt, now);
        }
        now
    }

    /// Fills the server to its limit for the rest of the test, as a saturating load would.
    fn saturate(l: &Arc<ConcurrencyLimit>) -> Vec<InFlight> {
        let mut held = Vec::new();
        while let Ok(p) = l.try_acquire("hold") {
            held.push(p);
        }
        held
    }

    #[test]
    fn a_fixed_limit_refuses_past_the_maximum_with_a_time_to_retry() {
        let l = ConcurrencyLimit::new(2, false);
        let a = l.try_acquire("m").expect("first");
        let _b = l.try_acquire("m").expect("second");
        let wait = l.try_acquire("m").err().expect("third is refused");
        assert!((RETRY_MIN..=RETRY_MAX).contains(&wait), "{wait:?}");
        drop(a);
        assert!(l.try_acquire("m").is_ok(), "a place freed is taken again");
        assert_eq!(l.limit(), 2, "not adaptive: the limit stays");
    }

    #[test]
    fn latency_that_holds_keeps_the_limit_and_slowing_calls_shrink_it() {
        let l = ConcurrencyLimit::new(400, true);
        let held = saturate(&l);
        assert_eq!(held.len(), 400);
        let t0 = Instant::now();
        let gap = Duration::from_millis(10);
        // Usual: 5 ms. Windows at the usual latency leave the limit at the maximum.
        let t = feed(&l, "w", 200, Duration::from_millis(5), t0, gap);
        assert_eq!(l.limit(), 400);
        // Calls now take six times as long (a queue): the limit comes down at once.
        let t = feed(&l, "w", 200, Duration::from_millis(30), t, gap);
        let shrunk = l.limit();
        assert!(shrunk < 400 / 2, "limit {shrunk} after slow windows");
        // Within the tolerance again: it grows back.
        let held2 = saturate(&l);
        let _t = feed(&l, "w", 400, Duration::from_millis(6), t, gap);
        assert!(
            l.limit() > shrunk,
            "limit {} grew back from {shrunk}",
            l.limit()
        );
        drop((held, held2));
    }

    #[test]
    fn a_slower_mix_of_methods_is_not_overload() {
        let l = ConcurrencyLimit::new(200, true);
        let _held = saturate(&l);
        let t0 = Instant::now();
        let gap = Duration::from_millis(10);
        // Reads at 1 ms and writes at 50 ms, each at its usual latency: no change whatever the mix.
        let t = feed(&l, "read", 100, Duration::from_millis(1), t0, gap);
        let t = feed(&l, "write", 5, Duration::from_millis(50), t, gap);
        let _ = feed(&l, "write", 200, Duration::from_millis(50), t, gap);
        assert_eq!(
            l.limit(),
            200,
            "writes at their usual latency are not overload"
        );
    }

    #[test]
    fn an_idle_server_keeps_its_limit_and_the_limit_never_goes_below_the_floor() {
        let l = ConcurrencyLimit::new(1000, true);
        let t0 = Instant::now();
        let gap = Duration::from_millis(10);
        // One call at a time (far below half the limit), however slow: nothing learned.
        let t = feed(&l, "m", 50, Duration::from_millis(1), t0, gap);
        let _ = feed(&l, "m", 200, Duration::from_millis(500), t, gap);
        assert_eq!(l.limit(), 1000);
        let _held = saturate(&l);
        let _ = feed(
            &l,
            "m",
            2000,
            Duration::from_secs(5),
            t0 + Duration::from_secs(60),
            gap,
        );
        assert!(l.limit() >= MIN_LIMIT, "{}", l.limit());
    }
}
