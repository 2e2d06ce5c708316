//! Tenancy on the request path: the in-memory key cache, organization states, key generation.
//!
//! Keys are looked up by the SHA-256 of the presented secret in a sharded map loaded from the store
//! at start and updated on every change, so authentication never touches the database and an
//! unknown key costs one hash and one map probe. Secrets are never stored or logged: only their
//! hash and a short display prefix.

use std::sync::Arc;

use dashmap::DashMap;
use rand::RngCore;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tollgate_store::{AccountState, ApiKey, KeyRole, Organization, Project};

use crate::limits::Limiter;

/// Prefix of inference keys.
pub const KEY_PREFIX: &str = "tg-";
/// Prefix of organization reader keys.
pub const READER_PREFIX: &str = "tgr-";

/// A key as the request path needs it.
#[derive(Debug)]
pub struct KeyEntry {
    pub id: String,
    pub organization: Arc<str>,
    pub project: Option<Arc<str>>,
    pub role: KeyRole,
    pub models: Option<Box<[String]>>,
    pub expires_at: Option<OffsetDateTime>,
    pub limiter: Option<Limiter>,
    pub project_limiter: Option<Arc<Limiter>>,
}

impl KeyEntry {
    pub fn may_use(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|m| m.iter().any(|x| x == model))
    }

    pub fn expired(&self, now: OffsetDateTime) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// An organization's place in the tree and its review state.
#[derive(Debug, Clone)]
pub struct OrgEntry {
    pub id: Arc<str>,
    pub name: String,
    pub parent: Option<Arc<str>>,
    pub state: AccountState,
}

/// Keys, projects and organizations held in memory.
#[derive(Default)]
pub struct Tenancy {
    keys: DashMap<[u8; 32], Arc<KeyEntry>>,
    key_hash_by_id: DashMap<String, [u8; 32]>,
    orgs: DashMap<Arc<str>, OrgEntry>,
    project_limiters: DashMap<String, Arc<Limiter>>,
}

/// SHA-256 of a presented key.
pub fn hash_key(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// A new secret (256 random bits), its hash, and its display prefix.
pub fn generate_key(prefix: &str) -> (String, [u8; 32], String) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let mut secret = String::with_capacity(prefix.len() + 64);
    secret.push_str(prefix);
    for b in bytes {
        secret.push_str(&format!("{b:02x}"));
    }
    let hash = hash_key(&secret);
    let display = format!("{}…", &secret[..prefix.len() + 6]);
    (secret, hash, display)
}

/// A new random id with a readable prefix (`org_…`, `proj_…`, `key_…`).
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 10];
    rand::rng().fill_bytes(&mut bytes);
    let mut id = String::with_capacity(prefix.len() + 20);
    id.push_str(prefix);
    for b in bytes {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

impl Tenancy {
    /// Loads everything from store rows.
    pub fn load(&self, orgs: Vec<Organization>, projects: Vec<Project>, keys: Vec<ApiKey>) {
        for o in orgs {
            self.put_org(&o);
        }
        for p in projects {
            self.put_project(&p);
        }
        for k in keys {
            self.put_key(&k);
        }
    }

    pub fn put_org(&self, o: &Organization) {
        let id: Arc<str> = o.id.as_str().into();
        self.orgs.insert(
            id.clone(),
            OrgEntry {
                id,
                name: o.name.clone(),
                parent: o.parent.as_deref().map(Into::into),
                state: o.state,
            },
        );
    }

    pub fn put_project(&self, p: &Project) {
        match Limiter::new(p.rpm, p.tpm) {
            Some(l) => {
                self.project_limiters.insert(p.id.clone(), Arc::new(l));
            }
            None => {
                self.project_limiters.remove(&p.id);
            }
        }
    }

    /// Adds or replaces a key; a revoked key is removed.
    pub fn put_key(&self, k: &ApiKey) {
        if k.revoked_at.is_some() {
            self.remove_key(&k.id);
            return;
        }
        let entry = KeyEntry {
            id: k.id.clone(),
            organization: k.organization.as_str().into(),
            project: k.project.as_deref().map(Into::into),
            role: k.role,
            models: k.models.clone().map(Vec::into_boxed_slice),
            expires_at: k.expires_at,
            limiter: Limiter::new(k.rpm, k.tpm),
            project_limiter: k
                .project
                .as_ref()
                .and_then(|p| self.project_limiters.get(p).map(|l| l.clone())),
        };
        self.key_hash_by_id.insert(k.id.clone(), k.hash);
        self.keys.insert(k.hash, Arc::new(entry));
    }

    pub fn remove_key(&self, id: &str) {
        if let Some((_, hash)) = self.key_hash_by_id.remove(id) {
            self.keys.remove(&hash);
        }
    }

    /// The key presented, if it exists and is not revoked.
    pub fn key(&self, secret: &str) -> Option<Arc<KeyEntry>> {
        self.keys.get(&hash_key(secret)).map(|e| e.clone())
    }

    pub fn org(&self, id: &str) -> Option<OrgEntry> {
        self.orgs.get(id).map(|e| e.clone())
    }

    pub fn set_state(&self, id: &str, state: AccountState) {
        if let Some(mut e) = self.orgs.get_mut(id) {
            e.state = state;
        }
    }

    /// The strictest review state over an organization and its ancestors: a reseller under review
    /// suspends its customers too.
    pub fn effective_state(&self, id: &str) -> AccountState {
        let mut state = AccountState::Active;
        // The organization is looked up by the borrowed id; only its ancestors' ids are held.
        let mut parent: Option<Arc<str>> = None;
        for hop in 0..=64 {
            let entry = match &parent {
                None if hop == 0 => self.orgs.get(id),
                None => break,
                Some(p) => self.orgs.get(&**p),
            };
            let Some(e) = entry else { break };
            match e.state {
                AccountState::Terminated => return AccountState::Terminated,
                AccountState::UnderReview => state = AccountState::UnderReview,
                AccountState::Active => {}
            }
            parent = e.parent.clone();
        }
        state
    }

    /// The ancestors of an organization, nearest first, then the top-level one last.
    pub fn top_level(&self, id: &str) -> String {
        let mut cur = id.to_owned();
        for _ in 0..64 {
            match self.orgs.get(cur.as_str()).and_then(|e| e.parent.clone()) {
                Some(p) => cur = p.to_string(),
                None => break,
            }
        }
        cur
    }

    /// The organization itself, then its ancestors up to the top-level one.
    pub fn ancestors(&self, id: &str) -> Vec<Arc<str>> {
        let mut out = Vec::with_capacity(4);
        let mut cur: Option<Arc<str>> = self.orgs.get(id).map(|e| e.id.clone());
        while let Some(c) = cur {
            if out.len() >= 64 {
                break;
            }
            cur = self.orgs.get(&*c).and_then(|e| e.parent.clone());
            out.push(c);
        }
        out
    }

    /// Whether `org` is `ancestor` or one of its descendants.
    pub fn is_within(&self, org: &str, ancestor: &str) -> bool {
        self.ancestors(org).iter().any(|a| &**a == ancestor)
    }

    /// Whether a (non-revoked) key with this id is held.
    pub fn has_key_id(&self, id: &str) -> bool {
        self.key_hash_by_id.contains_key(id)
    }

    /// Whether a project has limits (a limiter) held.
    pub fn has_project_limits(&self, id: &str) -> bool {
        self.project_limiters.contains_key(id)
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_long_random_and_hash_matches() {
        let (a, ha, prefix) = generate_key(KEY_PREFIX);
        let (b, _, _) = generate_key(KEY_PREFIX);
        assert_ne!(a, b);
        assert!(a.starts_with("tg-") && a.len() == 3 + 64);
        assert_eq!(hash_key(&a), ha);
        assert!(prefix.starts_with("tg-") && prefix.len() < a.len());
    }

    #[test]
    fn review_state_inherits_from_ancestors() {
        let t = Tenancy::default();
        let now = OffsetDateTime::now_utc();
        let org = |id: &str, parent: Option<&str>| Organization {
            id: id.into(),
            name: id.into(),
            parent: parent.map(Into::into),
            state: AccountState::Active,
            created_at: now,
        };
        t.load(vec![org("a", None), org("b", Some("a"))], vec![], vec![]);
        assert_eq!(t.effective_state("b"), AccountState::Active);
        t.set_state("a", AccountState::UnderReview);
        assert_eq!(t.effective_state("b"), AccountState::UnderReview);
        t.set_state("b", AccountState::Terminated);
        assert_eq!(t.effective_state("b"), AccountState::Terminated);
        assert_eq!(t.top_level("b"), "a");

        // A grandparent's state reaches its grandchildren; a parent loop ends.
        let t = Tenancy::default();
        t.load(
            vec![
                org("top", None),
                org("mid", Some("top")),
                org("leaf", Some("mid")),
                org("x", Some("y")),
                org("y", Some("x")),
            ],
            vec![],
            vec![],
        );
        t.set_state("top", AccountState::Terminated);
        assert_eq!(t.effective_state("leaf"), AccountState::Terminated);
        assert_eq!(t.effective_state("x"), AccountState::Active);
        t.set_state("y", AccountState::UnderReview);
        assert_eq!(t.effective_state("x"), AccountState::UnderReview);
    }
}
