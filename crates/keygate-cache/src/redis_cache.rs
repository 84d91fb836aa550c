//! Redis cache shared by all replicas. Every operation has a short deadline, and the connection
//! is (re)made lazily: Keygate starts and serves with Redis down, and uses it once it is back.
//! An operation that failed for want of Redis (no connection, a dropped one, no answer in time)
//! marks Redis down for [`RECONNECT_BACKOFF`]: until then every operation fails at once, so an
//! outage costs callers one timeout per second, not one per call; then one operation tries again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::AsyncCommands as _;
use redis::aio::ConnectionManager;
use tokio::sync::Mutex;

use crate::{Cache, CacheError, jittered};

/// How long one Redis call may take before it counts as a miss.
const OP_TIMEOUT: Duration = Duration::from_millis(250);
/// After a failed connect, wait this long before trying again, so an outage does not add a
/// connect attempt to every request.
const RECONNECT_BACKOFF: Duration = Duration::from_secs(1);

/// Redis-backed [`Cache`].
#[derive(Clone)]
pub struct RedisCache {
    client: redis::Client,
    state: Arc<Mutex<State>>,
    /// Until when operations fail at once (Redis was found unreachable).
    down_until: Arc<std::sync::Mutex<Option<Instant>>>,
}

struct State {
    conn: Option<ConnectionManager>,
    last_attempt: Option<Instant>,
}

impl RedisCache {
    /// Parses the URL; does not connect yet. `rediss://` connects over TLS (rustls on ring),
    /// trusting the system's roots like every other outbound TLS connection of Keygate (so
    /// `SSL_CERT_FILE` / `SSL_CERT_DIR` add a private CA).
    pub fn new(url: &str) -> Result<Self, CacheError> {
        if url.starts_with("rediss://") {
            // The process's one crypto provider; a second install is a no-op.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client =
            redis::Client::open(url).map_err(|e| CacheError::Unavailable(e.to_string()))?;
        Ok(Self {
            client,
            state: Arc::new(Mutex::new(State {
                conn: None,
                last_attempt: None,
            })),
            down_until: Arc::new(std::sync::Mutex::new(None)),
        })
    }

    /// Whether Redis was found unreachable less than [`RECONNECT_BACKOFF`] ago. The first
    /// operation after that takes the turn to try again (the others still fail at once).
    fn is_down(&self) -> bool {
        let Ok(mut until) = self.down_until.lock() else {
            return false;
        };
        match *until {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                // This caller probes; the rest wait for its outcome for one more pause.
                *until = Some(Instant::now() + RECONNECT_BACKOFF);
                false
            }
            None => false,
        }
    }

    fn mark(&self, reachable: bool) {
        if let Ok(mut until) = self.down_until.lock() {
            *until = (!reachable).then(|| Instant::now() + RECONNECT_BACKOFF);
        }
    }

    async fn conn(&self) -> Result<ConnectionManager, CacheError> {
        let mut state = self.state.lock().await;
        if let Some(c) = &state.conn {
            return Ok(c.clone());
        }
        if state
            .last_attempt
            .is_some_and(|t| t.elapsed() < RECONNECT_BACKOFF)
        {
            return Err(CacheError::Unavailable(
                "redis reconnect backing off".into(),
            ));
        }
        state.last_attempt = Some(Instant::now());
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(OP_TIMEOUT))
            .set_response_timeout(Some(OP_TIMEOUT))
            .set_number_of_retries(1);
        let conn = tokio::time::timeout(
            OP_TIMEOUT * 2,
            ConnectionManager::new_with_config(self.client.clone(), config),
        )
        .await
        .map_err(|_| CacheError::Timeout(OP_TIMEOUT * 2))?
        .map_err(|e| CacheError::Unavailable(e.to_string()))?;
        state.conn = Some(conn.clone());
        Ok(conn)
    }

    pub(crate) async fn run<T>(
        &self,
        op: impl AsyncFnOnce(ConnectionManager) -> redis::RedisResult<T>,
    ) -> Result<T, CacheError> {
        if self.is_down() {
            return Err(CacheError::Unavailable(
                "redis unreachable a moment ago; trying again after a pause".into(),
            ));
        }
        let conn = match self.conn().await {
            Ok(c) => c,
            Err(e) => {
                self.mark(false);
                return Err(e);
            }
        };
        match tokio::time::timeout(OP_TIMEOUT, op(conn)).await {
            Ok(Ok(v)) => {
                self.mark(true);
                Ok(v)
            }
            Ok(Err(e)) => {
                let unreachable = e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal();
                if unreachable {
                    self.mark(false);
                }
                Err(CacheError::Unavailable(e.to_string()))
            }
            Err(_) => {
                self.mark(false);
                Err(CacheError::Timeout(OP_TIMEOUT))
            }
        }
    }
}

#[async_trait]
impl Cache for RedisCache {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        self.run(async |mut c| c.get::<_, Option<Vec<u8>>>(key).await)
            .await
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        let ms = u64::try_from(jittered(ttl).as_millis()).unwrap_or(u64::MAX);
        self.run(async |mut c| c.pset_ex::<_, _, ()>(key, value, ms).await)
            .await
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        self.run(async |mut c| c.del::<_, ()>(key).await).await
    }
}
