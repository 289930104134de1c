//! Client authentication: bearer tokens checked in front of `ChatService` and `Cluster`.
//!
//! A token file (`--client-tokens FILE`, written by `raft_client token add|revoke|rotate`)
//! holds one line per token: `<user> <role> sha256:<hex>`. Only the SHA-256 of a token is
//! stored, so a leaked file grants nothing; tokens are 256 random bits, so a fast unsalted hash
//! is enough (nothing to brute-force), and lookups compare hashes in constant time.
//!
//! [`Authenticated`] wraps a generated service: it reads the method from the request path,
//! decides what the method needs ([`Need`]) and answers UNAUTHENTICATED (no or unknown token)
//! or PERMISSION_DENIED (a user token on an admin call) before the service sees the request.
//! An accepted caller is put in the request's extensions as a [`Caller`]; the chat service
//! uses it to fill or check a message's author, and to pass the credentials along when it
//! forwards a send to the leader. A running node re-reads the file when its modification time,
//! size or inode changes, checked on every call: `token revoke` takes effect on the next call.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use subtle::ConstantTimeEq;
use tonic::codegen::{http, Service};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::server::NamedService;
use tonic::{Request, Status};

use crate::tls::AUTHORIZATION;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Send, read and see the cluster status.
    User,
    /// Everything a user may do, plus membership changes, leadership transfer and snapshots.
    Admin,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

/// One stored token: its owner, its role and the SHA-256 of the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenEntry {
    /// The user the token authenticates (the author of its messages).
    pub user: String,
    /// What it may do.
    pub role: Role,
    hash: [u8; 32],
}

/// The contents of a token file. Loading is strict: a malformed line is an error naming the
/// file and line, never a silently skipped token.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenFile {
    /// The tokens, in file order.
    pub entries: Vec<TokenEntry>,
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Checks a user name: 1 to 64 letters, digits, `.`, `_`, `-` or `@` (it is written to the
/// token file's space-separated lines and becomes message authors).
pub fn validate_user(user: &str) -> Result<(), String> {
    let ok = !user.is_empty()
        && user.len() <= 64
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "user {user:?}: use 1 to 64 letters, digits, '.', '_', '-' or '@'"
        ))
    }
}

impl TokenFile {
    /// Parses a token file's text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, String> {
        let mut entries = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why: &str| format!("{}:{}: {why}", path.display(), n + 1);
            let f: Vec<&str> = line.split_whitespace().collect();
            let [user, role, hash] = f[..] else {
                return Err(bad("expected `<user> <user|admin> sha256:<hex>`"));
            };
            validate_user(user).map_err(|e| bad(&e))?;
            let role = match role {
                "user" => Role::User,
                "admin" => Role::Admin,
                _ => return Err(bad("role must be user or admin")),
            };
            let hash = hash
                .strip_prefix("sha256:")
                .and_then(unhex)
                .ok_or_else(|| bad("hash must be sha256:<64 hex digits>"))?;
            entries.push(TokenEntry {
                user: user.to_string(),
                role,
                hash,
            });
        }
        Ok(TokenFile { entries })
    }

    /// Reads a token file; `missing_ok` gives an empty file when it does not exist (for
    /// `token add` creating it), otherwise a missing file is an error naming it.
    pub fn load(path: &Path, missing_ok: bool) -> Result<Self, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if missing_ok && e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// The file's text.
    pub fn render(&self) -> String {
        let mut s = String::from(
            "# RustyRaft client tokens: <user> <role> sha256:<hash of the token>.\n\
             # Managed by `raft_client token add|revoke|rotate`; nodes re-read it on change.\n",
        );
        for e in &self.entries {
            s.push_str(&format!(
                "{} {} sha256:{}\n",
                e.user,
                e.role.name(),
                hex(&e.hash)
            ));
        }
        s
    }

    /// Writes the file atomically, readable by its owner only.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        crate::tls::write_file(path, &self.render(), true, true).map_err(|e| e.to_string())
    }

    /// Adds a fresh random token for `user` and returns it: the only time it is ever seen.
    pub fn add(&mut self, user: &str, role: Role) -> Result<String, String> {
        validate_user(user)?;
        let mut raw = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
            .map_err(|_| "the system random generator failed".to_string())?;
        let token = format!("rr_{}", hex(&raw));
        self.entries.push(TokenEntry {
            user: user.to_string(),
            role,
            hash: sha256(token.as_bytes()),
        });
        Ok(token)
    }

    /// Removes every token of `user`; returns how many.
    pub fn revoke(&mut self, user: &str) -> usize {
        let before = self.entries.len();
        self.entries.retain(|e| e.user != user);
        before - self.entries.len()
    }

    /// Who `token` authenticates. Every entry is compared, in constant time, so timing tells
    /// nothing about which hash came close.
    pub fn check(&self, token: &str) -> Option<(String, Role)> {
        let h = sha256(token.as_bytes());
        let mut found = None;
        for e in &self.entries {
            if bool::from(e.hash.ct_eq(&h)) {
                found = Some((e.user.clone(), e.role));
            }
        }
        found
    }
}

/// `raft_client token`: manage the client token file.
#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Add a token for a user and print it (only its hash is stored; it is never shown again).
    Add {
        /// The token file (created if missing, mode 0600).
        #[arg(long)]
        file: PathBuf,
        /// The user: the author of everything sent with this token.
        #[arg(long)]
        user: String,
        /// May also change the membership, transfer leadership and take snapshots.
        #[arg(long)]
        admin: bool,
    },
    /// Revoke every token of a user (nodes notice on their next call).
    Revoke {
        /// The token file.
        #[arg(long)]
        file: PathBuf,
        /// The user.
        #[arg(long)]
        user: String,
    },
    /// Replace every token of a user by one new token with the same role, and print it.
    Rotate {
        /// The token file.
        #[arg(long)]
        file: PathBuf,
        /// The user.
        #[arg(long)]
        user: String,
    },
    /// List users and roles (hashes only).
    List {
        /// The token file.
        #[arg(long)]
        file: PathBuf,
    },
}

impl TokenCommand {
    /// Runs the command; returns what to print on stdout (a new token, or the list) and a
    /// note for stderr. Errors name the file.
    pub fn run(self) -> Result<(String, String), String> {
        use TokenCommand as T;
        let (file, user) = match &self {
            T::Add { file, user, .. } | T::Revoke { file, user } | T::Rotate { file, user } => {
                (file.clone(), Some(user.clone()))
            }
            T::List { file } => (file.clone(), None),
        };
        if let Some(u) = &user {
            validate_user(u)?;
        }
        let mut f = TokenFile::load(&file, matches!(self, T::Add { .. }))?;
        let none = |u: &str| format!("{}: no token for user {u:?}", file.display());
        match self {
            T::Add { user, admin, .. } => {
                let role = if admin { Role::Admin } else { Role::User };
                let t = f.add(&user, role)?;
                f.save(&file)?;
                Ok((
                    t,
                    format!(
                        "token for {user} ({}) added to {}; it is shown only now",
                        role.name(),
                        file.display()
                    ),
                ))
            }
            T::Revoke { user, .. } => match f.revoke(&user) {
                0 => Err(none(&user)),
                n => {
                    f.save(&file)?;
                    Ok((String::new(), format!("revoked {n} token(s) of {user}")))
                }
            },
            T::Rotate { user, .. } => {
                let mine = f.entries.iter().filter(|e| e.user == user);
                let Some(role) = mine.map(|e| e.role).max_by_key(|r| *r == Role::Admin) else {
                    return Err(none(&user));
                };
                f.revoke(&user);
                let t = f.add(&user, role)?;
                f.save(&file)?;
                Ok((
                    t,
                    format!("{user}'s old token(s) revoked; the new one is shown only now"),
                ))
            }
            T::List { .. } => {
                let lines: Vec<String> = f
                    .entries
                    .iter()
                    .map(|e| format!("{} {}", e.user, e.role.name()))
                    .collect();
                Ok((lines.join("\n"), format!("{} token(s)", f.entries.len())))
            }
        }
    }
}

/// An authenticated caller, left in the request's extensions for the services.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The token's user: the author of everything this caller sends.
    pub user: String,
    /// The token's role.
    pub role: Role,
    /// The exact `authorization` value presented, passed along when the call is forwarded to
    /// the leader so that the leader's own check passes for the same user.
    pub authorization: MetadataValue<Ascii>,
}

/// The caller of a request, when the node runs with authentication.
pub fn caller<T>(req: &Request<T>) -> Option<Caller> {
    req.extensions().get::<Caller>().cloned()
}

/// The author a send is stored with: without authentication, the one given; with it, the
/// caller's user (an empty author becomes the user; another user's name is refused, so nobody
/// can post as someone else).
pub fn author_for(caller: Option<&Caller>, author: String) -> Result<String, Status> {
    match caller {
        None => Ok(author),
        Some(c) if author.is_empty() => Ok(c.user.clone()),
        Some(c) if author == c.user => Ok(author),
        Some(c) => Err(Status::permission_denied(format!(
            "authenticated as {:?}; cannot send as {author:?}",
            c.user
        ))),
    }
}

/// What a call needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Nothing (reads with `--open-reads`).
    Open,
    /// A valid token.
    User,
    /// An admin token.
    Admin,
}

/// The policy: what each method of `ChatService` and `Cluster` needs. Unknown methods need an
/// admin token (deny by default; the service then answers UNIMPLEMENTED to admins only).
pub fn need(path: &str, open_reads: bool) -> Need {
    let read = if open_reads { Need::Open } else { Need::User };
    match path {
        "/rustyraft.v1.ChatService/GetHistory"
        | "/rustyraft.v1.ChatService/Subscribe"
        | "/rustyraft.v1.ChatService/ListRooms" => read,
        "/rustyraft.v1.ChatService/SendMessage"
        | "/rustyraft.v1.ChatService/SendStream"
        | "/rustyraft.v1.ChatService/Chat"
        | "/rustyraft.v1.ChatService/CreateRoom"
        | "/rustyraft.v1.Cluster/Status" => Need::User,
        _ => Need::Admin,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<std::time::SystemTime>,
    len: u64,
    ino: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        ino: m.ino(),
    })
}

/// The outcome of the last read of the token file.
type Loaded = Result<Arc<TokenFile>, String>;

/// The token file of a running node, re-read whenever it changes.
pub struct TokenStore {
    path: PathBuf,
    open_reads: bool,
    /// The stamp of the last read, and its outcome. A file that becomes unreadable or
    /// malformed refuses every token (fails closed) until it is fixed: keeping the old set
    /// would keep revoked tokens alive. std Mutex: never held across an await.
    state: Mutex<(Option<Stamp>, Loaded)>,
}

impl TokenStore {
    /// Loads `path` (it must exist and parse: a node never starts with auth half on).
    pub fn open(path: &Path, open_reads: bool) -> Result<Arc<Self>, String> {
        let st = stamp(path);
        let file = TokenFile::load(path, false)?;
        Ok(Arc::new(TokenStore {
            path: path.to_path_buf(),
            open_reads,
            state: Mutex::new((st, Ok(Arc::new(file)))),
        }))
    }

    fn current(&self) -> Result<Arc<TokenFile>, String> {
        let now = stamp(&self.path);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if now != st.0 || now.is_none() {
            let loaded = TokenFile::load(&self.path, false).map(Arc::new);
            match &loaded {
                Ok(f) => tracing::info!(path = %self.path.display(), tokens = f.entries.len(),
                    "client token file (re)loaded"),
                Err(e) => tracing::error!(error = %e, "client token file unusable; refusing \
                    every token until it is fixed"),
            }
            *st = (now, loaded);
        }
        st.1.clone()
    }

    /// Decides a call to `path` with these headers: `Ok(Some(caller))` when a valid token
    /// was presented, `Ok(None)` for an open call without one, or the refusal.
    pub fn authorize(
        &self,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Result<Option<Caller>, Status> {
        let need = need(path, self.open_reads);
        let Some(value) = headers.get(AUTHORIZATION) else {
            return match need {
                Need::Open => Ok(None),
                _ => Err(Status::unauthenticated(
                    "this call needs a token: `authorization: Bearer <token>` (--token)",
                )),
            };
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| {
                let (scheme, t) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| t.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated("malformed authorization: want `Bearer <token>`")
            })?;
        let file = self.current().map_err(|_| {
            Status::unavailable("this node's token file is unusable; tokens cannot be checked")
        })?;
        let (user, role) = file
            .check(token)
            .ok_or_else(|| Status::unauthenticated("unknown or revoked token"))?;
        if need == Need::Admin && role != Role::Admin {
            return Err(Status::permission_denied(format!(
                "{path} needs an admin token; {user:?} is a user"
            )));
        }
        let authorization = MetadataValue::try_from(value.as_bytes())
            .map_err(|_| Status::unauthenticated("malformed authorization"))?;
        Ok(Some(Caller {
            user,
            role,
            authorization,
        }))
    }
}

/// A generated gRPC service behind the token check (see the module doc). Without a store
/// (auth off) requests pass untouched.
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    store: Option<Arc<TokenStore>>,
}

impl<S> Authenticated<S> {
    /// Wraps `inner`; `store` `None` means authentication is off.
    pub fn new(inner: S, store: Option<Arc<TokenStore>>) -> Self {
        Authenticated { inner, store }
    }
}

impl<S: NamedService> NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

type BoxFuture<T, E> = Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send>>;

impl<S, B, R> Service<http::Request<B>> for Authenticated<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if let Some(store) = &self.store {
            // Whatever the client sent, only this check creates a Caller.
            req.extensions_mut().remove::<Caller>();
            match store.authorize(req.uri().path(), req.headers()) {
                Ok(Some(c)) => {
                    req.extensions_mut().insert(c);
                }
                Ok(None) => {}
                Err(st) => {
                    tracing::debug!(path = req.uri().path(), code = ?st.code(), "call refused");
                    return Box::pin(async move { Ok(st.into_http()) });
                }
            }
        }
        Box::pin(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: Option<&str>) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        if let Some(v) = v {
            h.insert(AUTHORIZATION, v.parse().unwrap());
        }
        h
    }

    /// Tokens round-trip through the file as hashes only; revocation and a malformed file
    /// take effect on the next call (the file is re-read when it changes).
    #[test]
    fn token_file_roles_revocation_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let mut f = TokenFile::default();
        let ada = f.add("ada", Role::User).unwrap();
        let root = f.add("root", Role::Admin).unwrap();
        f.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&ada) && !text.contains(&root[3..]));
        assert_eq!(TokenFile::load(&path, false).unwrap(), f);

        let store = TokenStore::open(&path, false).unwrap();
        let send = "/rustyraft.v1.ChatService/SendMessage";
        let add = "/rustyraft.v1.Cluster/AddMember";
        let code = |p: &str, h: Option<&str>| {
            store
                .authorize(p, &headers(h))
                .map(|c| c.map(|c| c.user))
                .map_err(|s| s.code())
        };
        let bearer = |t: &str| format!("Bearer {t}");
        assert_eq!(code(send, Some(&bearer(&ada))), Ok(Some("ada".into())));
        assert_eq!(code(send, None), Err(tonic::Code::Unauthenticated));
        assert_eq!(
            code(send, Some("Bearer nope")),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(code(send, Some(&ada)), Err(tonic::Code::Unauthenticated));
        assert_eq!(
            code(add, Some(&bearer(&ada))),
            Err(tonic::Code::PermissionDenied)
        );
        assert_eq!(code(add, Some(&bearer(&root))), Ok(Some("root".into())));
        assert_eq!(
            code("/rustyraft.v1.ChatService/ListRooms", None),
            Err(tonic::Code::Unauthenticated)
        );

        let mut f2 = TokenFile::load(&path, false).unwrap();
        assert_eq!(f2.revoke("ada"), 1);
        f2.save(&path).unwrap();
        assert_eq!(
            code(send, Some(&bearer(&ada))),
            Err(tonic::Code::Unauthenticated)
        );
        std::fs::write(&path, "garbage line here too\n").unwrap();
        assert_eq!(
            code(send, Some(&bearer(&root))),
            Err(tonic::Code::Unavailable)
        );
        f2.save(&path).unwrap();
        assert_eq!(code(send, Some(&bearer(&root))), Ok(Some("root".into())));
    }

    #[test]
    fn open_reads_and_author_rules() {
        assert_eq!(
            need("/rustyraft.v1.ChatService/Subscribe", true),
            Need::Open
        );
        assert_eq!(
            need("/rustyraft.v1.ChatService/Subscribe", false),
            Need::User
        );
        assert_eq!(need("/rustyraft.v1.Cluster/Snapshot", true), Need::Admin);
        assert_eq!(need("/rustyraft.v1.ChatService/Nope", true), Need::Admin);
        let c = Caller {
            user: "ada".into(),
            role: Role::User,
            authorization: MetadataValue::from_static("Bearer x"),
        };
        assert_eq!(author_for(Some(&c), String::new()).unwrap(), "ada");
        assert_eq!(author_for(Some(&c), "ada".into()).unwrap(), "ada");
        assert_eq!(
            author_for(Some(&c), "bob".into()).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        assert_eq!(author_for(None, "bob".into()).unwrap(), "bob");
        for bad in ["x y", "", "a\n"] {
            assert!(TokenFile::parse(&format!("{bad} user sha256:00\n"), Path::new("f")).is_err());
        }
    }
}
