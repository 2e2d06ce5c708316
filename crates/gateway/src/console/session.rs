//! The console's signed-in sessions: who, the credential they act with (in memory only), their
//! CSRF token. Kept in [`crate::app::App`]; knows nothing of the pages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use rand::RngCore;

/// How long a session lasts after sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// Who signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// The admin token: everything.
    Admin,
    /// An organization reader key: that organization and its descendants, read only.
    Reader { organization: String },
    /// A model-owner key: the reviews and evidence of its owner's models.
    Owner { owner: String },
}

/// One signed-in browser.
pub struct Session {
    pub who: Who,
    /// The credential the session acts with (kept in memory only).
    pub(super) credential: String,
    /// Token every state-changing form must carry.
    pub csrf: String,
    pub(super) created: Instant,
}

impl Session {
    /// Whether the session may take admin actions.
    pub fn is_admin(&self) -> bool {
        self.who == Who::Admin
    }
}

/// The console's signed-in sessions, by session id.
#[derive(Default)]
pub struct Sessions {
    map: DashMap<String, Arc<Session>>,
}

impl Sessions {
    pub(super) fn create(&self, who: Who, credential: String) -> (String, Arc<Session>) {
        let now = Instant::now();
        self.map
            .retain(|_, s| now.duration_since(s.created) < SESSION_TTL);
        let id = random_hex();
        let session = Arc::new(Session {
            who,
            credential,
            csrf: random_hex(),
            created: now,
        });
        self.map.insert(id.clone(), session.clone());
        (id, session)
    }

    pub(super) fn get(&self, id: &str) -> Option<Arc<Session>> {
        let s = self.map.get(id)?.clone();
        if s.created.elapsed() >= SESSION_TTL {
            self.map.remove(id);
            return None;
        }
        Some(s)
    }

    pub(super) fn remove(&self, id: &str) {
        self.map.remove(id);
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no session is live.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

pub(super) fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
