//! API tokens: roles, hashed storage in `tokens.json`, and the admin token written on first start.
//!
//! A token reads `pt_<id>_<secret>`: `id` is 8 hex digits that name it in lists and revocations,
//! `secret` 64 hex digits (256 random bits). The store keeps only the SHA-256 of the whole token;
//! the secret is shown once, when the token is created.

use crate::core::Millis;
use crate::protocol::{Role, TokenInfo};
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub const TOKENS_FILE: &str = "tokens.json";
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// A token known to the server. `revoked` is seen by the connections that authenticated with it.
pub struct TokenEntry {
    pub info: TokenInfo,
    sha256: [u8; 32],
    pub revoked: AtomicBool,
}

#[derive(Serialize, Deserialize)]
struct StoredToken {
    id: String,
    name: String,
    role: String,
    sha256: String,
    created_at: Millis,
}

#[derive(Serialize, Deserialize)]
struct StoredTokens {
    format: u32,
    tokens: Vec<StoredToken>,
}

/// The tokens of one server, kept in memory and written through to `tokens.json`.
pub struct TokenStore {
    path: PathBuf,
    tokens: Mutex<Vec<Arc<TokenEntry>>>,
    rng: SystemRandom,
}

/// What opening the store did on first start.
pub struct FirstStart {
    pub admin_token_path: PathBuf,
}

impl TokenStore {
    /// Opens the data directory's token file; on first start creates it with one admin token
    /// and writes that token to `admin.token` (mode 0600).
    pub fn open(data_dir: &Path, now: Millis) -> Result<(TokenStore, Option<FirstStart>), String> {
        let path = data_dir.join(TOKENS_FILE);
        let store = TokenStore { path: path.clone(), tokens: Mutex::new(Vec::new()), rng: SystemRandom::new() };
        match std::fs::read(&path) {
            Ok(bytes) => {
                let stored: StoredTokens = serde_json::from_slice(&bytes).map_err(|e| {
                    format!("{} is damaged: {e}; restore it or remove it to start over", path.display())
                })?;
                let mut tokens = Vec::new();
                for t in stored.tokens {
                    let role = Role::parse(&t.role).ok_or_else(|| {
                        format!("{}: token {} has an unknown role {:?}", path.display(), t.id, t.role)
                    })?;
                    let sha256 = from_hex(&t.sha256)
                        .ok_or_else(|| format!("{}: token {} has a bad hash", path.display(), t.id))?;
                    let info = TokenInfo { id: t.id, name: t.name, role, created_at: t.created_at };
                    tokens.push(Arc::new(TokenEntry { info, sha256, revoked: AtomicBool::new(false) }));
                }
                *store.tokens.lock().unwrap() = tokens;
                Ok((store, None))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (_, secret) = store.create("admin", Role::Admin, now)?;
                let admin_token_path = data_dir.join(ADMIN_TOKEN_FILE);
                write_private(&admin_token_path, format!("{secret}\n").as_bytes())?;
                Ok((store, Some(FirstStart { admin_token_path })))
            }
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// The entry of a valid token.
    pub fn authenticate(&self, token: &str) -> Option<Arc<TokenEntry>> {
        let id = token.strip_prefix("pt_")?.split('_').next()?;
        let hash = sha256(token.as_bytes());
        let tokens = self.tokens.lock().unwrap();
        let entry = tokens.iter().find(|t| t.info.id == id)?;
        (constant_time_eq(&entry.sha256, &hash) && !entry.revoked.load(Ordering::Acquire)).then(|| entry.clone())
    }

    /// Creates a token; returns its listing and the token itself (shown once).
    pub fn create(&self, name: &str, role: Role, now: Millis) -> Result<(TokenInfo, String), String> {
        if name.is_empty() || name.len() > 64 {
            return Err("a token name is 1 to 64 bytes".into());
        }
        let mut tokens = self.tokens.lock().unwrap();
        let id = loop {
            let id = hex(&self.random::<4>()?);
            if !tokens.iter().any(|t| t.info.id == id) {
                break id;
            }
        };
        let secret = format!("pt_{id}_{}", hex(&self.random::<32>()?));
        let info = TokenInfo { id, name: name.to_string(), role, created_at: now };
        tokens.push(Arc::new(TokenEntry {
            info: info.clone(),
            sha256: sha256(secret.as_bytes()),
            revoked: AtomicBool::new(false),
        }));
        if let Err(e) = self.save(&tokens) {
            tokens.pop();
            return Err(e);
        }
        Ok((info, secret))
    }

    pub fn list(&self) -> Vec<TokenInfo> {
        self.tokens.lock().unwrap().iter().map(|t| t.info.clone()).collect()
    }

    /// Revokes a token: it is forgotten, and connections that use it are refused from their next
    /// request on. `Ok(false)` if there is no such token.
    pub fn revoke(&self, id: &str) -> Result<bool, String> {
        let mut tokens = self.tokens.lock().unwrap();
        let Some(at) = tokens.iter().position(|t| t.info.id == id) else { return Ok(false) };
        let entry = tokens.remove(at);
        if let Err(e) = self.save(&tokens) {
            tokens.insert(at, entry);
            return Err(e);
        }
        entry.revoked.store(true, Ordering::Release);
        Ok(true)
    }

    fn save(&self, tokens: &[Arc<TokenEntry>]) -> Result<(), String> {
        let stored = StoredTokens {
            format: 1,
            tokens: tokens
                .iter()
                .map(|t| StoredToken {
                    id: t.info.id.clone(),
                    name: t.info.name.clone(),
                    role: t.info.role.as_str().into(),
                    sha256: hex(&t.sha256),
                    created_at: t.info.created_at,
                })
                .collect(),
        };
        let json = serde_json::to_vec_pretty(&stored).expect("tokens serialise");
        write_private(&self.path, &json)
    }

    fn random<const N: usize>(&self) -> Result<[u8; N], String> {
        let mut b = [0; N];
        self.rng.fill(&mut b).map_err(|_| "the system random number generator failed".to_string())?;
        Ok(b)
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    digest::digest(&digest::SHA256, bytes).as_ref().try_into().expect("32 bytes")
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn from_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Writes a file only its owner can read (mode 0600), atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    write_file(path, bytes, 0o600)
}

/// Writes a file atomically (a temporary file, synced, then renamed) with the given mode.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let err = |what: &str, e: std::io::Error| format!("cannot {what} {}: {e}", path.display());
    let _ = std::fs::remove_file(&tmp);
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp).map_err(|e| err("create", e))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).map_err(|e| err("write", e))?;
    std::fs::rename(&tmp, path).map_err(|e| err("replace", e))?;
    if let Some(dir) = path.parent() {
        let _ = std::fs::File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn first_start_writes_a_private_admin_token_that_authenticates() {
        let dir = tempfile::tempdir().unwrap();
        let (store, first) = TokenStore::open(dir.path(), 5).unwrap();
        let path = first.expect("first start").admin_token_path;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let token = std::fs::read_to_string(&path).unwrap().trim().to_string();
        assert_eq!(store.authenticate(&token).unwrap().info.role, Role::Admin);
        // Stored hashed: the secret is nowhere in the token file.
        let file = std::fs::read_to_string(dir.path().join(TOKENS_FILE)).unwrap();
        assert!(!file.contains(&token[12..]));
        assert!(store.authenticate("pt_00000000_00").is_none());
        assert!(store.authenticate(&format!("{token}x")).is_none());
        assert!(store.authenticate("").is_none());

        let (info, pos) = store.create("pos-1", Role::Checkout, 9).unwrap();
        drop(store);
        let (store, first) = TokenStore::open(dir.path(), 10).unwrap();
        assert!(first.is_none());
        let entry = store.authenticate(&pos).unwrap();
        assert_eq!(entry.info, info);
        assert_eq!(store.list().len(), 2);
        assert!(store.revoke(&info.id).unwrap());
        assert!(entry.revoked.load(Ordering::Acquire));
        assert!(!store.revoke(&info.id).unwrap());
        assert!(store.authenticate(&pos).is_none());
        let (store, _) = TokenStore::open(dir.path(), 11).unwrap();
        assert!(store.authenticate(&pos).is_none());
        assert!(store.authenticate(&token).is_some());
    }
}
