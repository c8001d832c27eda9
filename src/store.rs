//! The optional server-side session store (Redis). With it, the session cookie holds only a
//! random ticket; the session lives in Redis under the ticket's SHA-256, so a session can be
//! ended on every replica at once (sign-out, "sign out everywhere", an operator's revocation,
//! OpenID Connect back-channel logout), and sessions may be larger than cookies allow.
//!
//! Keys, under `session.redis_prefix`:
//!
//! | key | value |
//! |---|---|
//! | `s:<id>` | the session, JSON; expires with it |
//! | `u:<provider>:<subject>` | the ids of a user's sessions, for revoking them all |
//! | `sid:<provider>:<sid>` | the session of one provider session (`sid`), for back-channel logout |
//! | `lock:<id>` | held by the replica refreshing the session |
//!
//! Every command is bounded by a timeout. When Redis cannot be reached, requests that need a
//! session fail closed (503) and the connection is re-established on later requests.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use crate::session::{Session, now};

/// Longest wait for Redis on any one command.
const TIMEOUT: Duration = Duration::from_secs(2);

/// Redis cannot be reached or answered wrongly.
#[derive(Debug, thiserror::Error)]
#[error("the session store is unavailable: {0}")]
pub struct StoreError(String);

impl StoreError {
    /// An error with this message.
    pub fn from_message(message: String) -> Self {
        Self(message)
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        Self(e.to_string())
    }
}

/// A Redis session store.
pub struct Store {
    client: redis::Client,
    conn: OnceCell<ConnectionManager>,
    prefix: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// A store at `url` (`redis://[:password@]host:port[/db]`); connects on first use.
    pub fn new(url: &str, prefix: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        Ok(Self {
            client,
            conn: OnceCell::new(),
            prefix: prefix.to_string(),
        })
    }

    async fn conn(&self) -> Result<ConnectionManager, StoreError> {
        let manager = self
            .conn
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(TIMEOUT))
                    .set_response_timeout(Some(TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                tokio::time::timeout(
                    TIMEOUT * 2,
                    self.client.get_connection_manager_with_config(config),
                )
                .await
                .map_err(|_| StoreError("connecting timed out".into()))?
                .map_err(StoreError::from)
            })
            .await?;
        Ok(manager.clone())
    }

    /// Runs one command or pipeline within [`TIMEOUT`].
    async fn run<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Result<T, StoreError> {
        let mut conn = self.conn().await?;
        tokio::time::timeout(TIMEOUT, pipe.query_async::<T>(&mut conn))
            .await
            .map_err(|_| StoreError("no answer in time".into()))?
            .map_err(StoreError::from)
    }

    fn key(&self, kind: &str, rest: &str) -> String {
        format!("{}{kind}:{rest}", self.prefix)
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("PING");
        self.run::<(String,)>(&pipe).await.map(drop)
    }

    /// The session stored under `id`, if it exists and has not expired.
    pub async fn load(&self, id: &str) -> Result<Option<Session>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(self.key("s", id));
        let (json,): (Option<String>,) = self.run(&pipe).await?;
        Ok(json
            .and_then(|j| serde_json::from_str::<Session>(&j).ok())
            .filter(|s| s.expires_at > now()))
    }

    /// Stores `session` under `id` until it expires, indexed by user and provider session.
    pub async fn save(&self, id: &str, session: &Session) -> Result<(), StoreError> {
        let json = serde_json::to_string(session).map_err(|e| StoreError(e.to_string()))?;
        let ttl = session.expires_at.saturating_sub(now()).max(1);
        let user = self.key("u", &format!("{}:{}", session.provider, session.subject));
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(self.key("s", id))
            .arg(json)
            .arg("EX")
            .arg(ttl)
            .ignore()
            .cmd("SADD")
            .arg(&user)
            .arg(id)
            .ignore()
            // The index lives as long as the longest session in it.
            .cmd("EXPIRE")
            .arg(&user)
            .arg(ttl)
            .arg("GT")
            .ignore()
            .cmd("EXPIRE")
            .arg(&user)
            .arg(ttl)
            .arg("NX")
            .ignore();
        if let Some(sid) = &session.sid {
            pipe.cmd("SET")
                .arg(self.key("sid", &format!("{}:{sid}", session.provider)))
                .arg(id)
                .arg("EX")
                .arg(ttl)
                .ignore();
        }
        self.run::<()>(&pipe).await
    }

    /// Ends one session.
    pub async fn delete(&self, id: &str) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(self.key("s", id)).ignore();
        self.run::<()>(&pipe).await
    }

    /// Ends every session of a user; returns how many there were.
    pub async fn revoke_user(&self, provider: &str, subject: &str) -> Result<usize, StoreError> {
        let user = self.key("u", &format!("{provider}:{subject}"));
        let mut pipe = redis::pipe();
        pipe.cmd("SMEMBERS").arg(&user);
        let (ids,): (Vec<String>,) = self.run(&pipe).await?;
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("DEL").arg(&user).ignore();
        for id in &ids {
            pipe.cmd("DEL").arg(self.key("s", id));
        }
        let deleted: Vec<usize> = self.run(&pipe).await?;
        Ok(deleted.iter().sum())
    }

    /// Ends the session of one provider session (back-channel logout with `sid`).
    pub async fn revoke_sid(&self, provider: &str, sid: &str) -> Result<usize, StoreError> {
        let key = self.key("sid", &format!("{provider}:{sid}"));
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(&key);
        let (id,): (Option<String>,) = self.run(&pipe).await?;
        let Some(id) = id else { return Ok(0) };
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(&key)
            .ignore()
            .cmd("DEL")
            .arg(self.key("s", &id));
        let (deleted,): (usize,) = self.run(&pipe).await?;
        Ok(deleted)
    }

    /// Takes the refresh lock of session `id` for `ttl`; false if another replica holds it.
    pub async fn lock(&self, id: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.key("lock", id))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let (set,): (Option<String>,) = self.run(&pipe).await?;
        Ok(set.is_some())
    }

    /// Releases the refresh lock of session `id`.
    pub async fn unlock(&self, id: &str) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("DEL").arg(self.key("lock", id)).ignore();
        self.run::<()>(&pipe).await
    }
}
