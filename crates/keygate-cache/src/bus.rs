//! The event doorbell. The event log in the store is the record; the bus only says "workspace W
//! has events up to seq N" so watchers re-read the log at once instead of on their next poll.
//! A lost ring costs latency, never an event.

use tokio::sync::broadcast;

/// A ring: new events exist in `workspace_id` up to `seq`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    pub workspace_id: String,
    pub seq: i64,
}

/// The Redis channel rings cross replicas on.
pub const CHANNEL: &str = "keygate:v1:events";

/// The doorbell: in-process by default; with Redis, rings also cross replicas, so a watcher on
/// one replica hears at once of events another replica committed.
#[derive(Clone)]
pub struct Doorbell {
    tx: broadcast::Sender<Ring>,
    publish: Option<tokio::sync::mpsc::UnboundedSender<Ring>>,
}

impl Default for Doorbell {
    fn default() -> Self {
        Self::new()
    }
}

impl Doorbell {
    pub fn new() -> Self {
        let (tx, _) = broadcast::channel(1024);
        Self { tx, publish: None }
    }

    /// A doorbell shared through Redis pub/sub. Must be called inside a tokio runtime; the
    /// publisher and subscriber reconnect on their own while Redis is away.
    pub fn with_redis(url: &str) -> Result<Self, crate::CacheError> {
        let client =
            redis::Client::open(url).map_err(|e| crate::CacheError::Unavailable(e.to_string()))?;
        let mut bell = Self::new();
        let (ptx, prx) = tokio::sync::mpsc::unbounded_channel();
        bell.publish = Some(ptx);
        tokio::spawn(publisher(client.clone(), prx));
        tokio::spawn(subscriber(client, bell.tx.clone()));
        Ok(bell)
    }

    /// Rings for `workspace_id`; no listener is fine.
    pub fn ring(&self, workspace_id: String, seq: i64) {
        let ring = Ring { workspace_id, seq };
        if let Some(p) = &self.publish {
            let _ = p.send(ring.clone());
        }
        let _ = self.tx.send(ring);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Ring> {
        self.tx.subscribe()
    }
}

const RECONNECT: std::time::Duration = std::time::Duration::from_secs(1);

async fn publisher(client: redis::Client, mut rx: tokio::sync::mpsc::UnboundedReceiver<Ring>) {
    use redis::AsyncCommands as _;
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    while let Some(ring) = rx.recv().await {
        if conn.is_none() {
            conn = client.get_multiplexed_async_connection().await.ok();
        }
        let Some(c) = conn.as_mut() else {
            continue; // Redis is away: this ring is lost; watchers still poll the log.
        };
        let payload = format!("{}|{}", ring.workspace_id, ring.seq);
        if c.publish::<_, _, ()>(CHANNEL, payload).await.is_err() {
            conn = None;
        }
    }
}

async fn subscriber(client: redis::Client, tx: broadcast::Sender<Ring>) {
    use tokio_stream::StreamExt as _;
    loop {
        if let Ok(mut pubsub) = client.get_async_pubsub().await
            && pubsub.subscribe(CHANNEL).await.is_ok()
        {
            let mut messages = pubsub.into_on_message();
            while let Some(msg) = messages.next().await {
                let Ok(payload) = msg.get_payload::<String>() else {
                    continue;
                };
                if let Some((ws, seq)) = payload.split_once('|')
                    && let Ok(seq) = seq.parse()
                {
                    let _ = tx.send(Ring {
                        workspace_id: ws.to_owned(),
                        seq,
                    });
                }
            }
        }
        tokio::time::sleep(RECONNECT).await;
    }
}
