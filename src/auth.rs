//! Who may do what, decided in one place, from a request's head alone (the front asks before it
//! reads or allocates a body).
//!
//! | who                      | holds                              | may                                          |
//! |--------------------------|------------------------------------|----------------------------------------------|
//! | a queen                  | the cluster token, her drones' credentials | call her drones' attempt routes with each one's credential |
//! | a drone                  | the cluster token (to join), its own credential | register; renew, report its own attempts |
//! | a client, `read`         | a client token                     | every `GET` (task `env` values shown as `***`) |
//! | a client, `submit`       | a client token                     | + create and cancel tasks, `/submit_task`    |
//! | a client, `operate`      | a client token                     | + drain and undrain drones                   |
//! | a client, `admin`        | a client token, or the cluster token | everything a client may: + register drones  |
//! | a task                   | nothing of the above               | nothing                                      |
//!
//! - The **cluster token** (`--token-file`, `HIVE_TOKEN`) is the join secret: a drone shows it to
//!   register, and a person holding it is `admin`. It never leaves the queen or the drone that
//!   hold it (queens call drones with the drone's own credential) and never reaches a task.
//! - A **drone credential** is issued by a queen at each registration under a new boot of the
//!   drone, kept in the store with the drone's record so every queen knows it, and returned to the
//!   drone. A drone starts and stops attempts only for a caller showing it ([`Identity::Queen`]),
//!   and a queen takes a drone's reports and renewals only with it ([`Identity::Drone`]), and only
//!   for that drone's own attempts (the route checks that).
//! - **Client tokens** (`--client-tokens FILE`, one `NAME SCOPE SECRET` a line) give people a
//!   scope each; every accepted change they make is logged once with their name (an audit line).
//!
//! Without a cluster token the hive is open, as the tutorial's is: a request without a token may
//! do what `admin` may. Credentials are still issued and required between queens and drones.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use log::{info, warn};
use parking_lot::{Mutex, RwLock};

use crate::error::Error;
use crate::logging::quoted;

/// Shortest token accepted: a guessable secret guards nothing.
pub const MIN_TOKEN_CHARS: usize = 16;

/// Longest token accepted, to keep the header small.
pub const MAX_TOKEN_CHARS: usize = 4096;

/// Random bytes in a credential a queen issues (as hex, twice as many characters).
const CREDENTIAL_BYTES: usize = 32;

/// How often the client tokens' file is looked at for a change.
const CLIENT_TOKENS_POLL: Duration = Duration::from_secs(1);

/// A refusal is logged at most this often per peer address, so a client retrying without a token
/// cannot fill the log.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

/// Peers whose last refusal is remembered, at most; past it, the oldest are forgotten.
const REMEMBERED_REFUSERS: usize = 4096;

/// The name the cluster token goes by in audit lines.
pub const CLUSTER_TOKEN_NAME: &str = "cluster";

/// A validated secret: the cluster token, a client token or a drone's credential. Its `Debug`
/// never shows the value, so it cannot leak into a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The whole `Authorization` header value: `Bearer <token>`.
    header: String,
}

impl Token {
    /// Checks and wraps a token: printable ASCII without spaces, at least [`MIN_TOKEN_CHARS`] long.
    pub fn new(secret: &str) -> Result<Token, String> {
        let secret = secret.trim_end_matches(['\n', '\r']);
        if !(MIN_TOKEN_CHARS..=MAX_TOKEN_CHARS).contains(&secret.len()) {
            return Err(format!(
                "the token must be {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} characters long"
            ));
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the token must be printable ASCII without spaces".into());
        }
        Ok(Token {
            header: format!("Bearer {secret}"),
        })
    }

    /// A new random credential, from the kernel's random source.
    pub fn generate() -> std::io::Result<Token> {
        let mut bytes = [0u8; CREDENTIAL_BYTES];
        let mut filled = 0;
        while filled < bytes.len() {
            let rest = &mut bytes[filled..];
            // SAFETY: writes at most `rest.len()` bytes into a live buffer of that length.
            let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
                continue;
            }
            filled += n as usize;
        }
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Token::new(&hex).expect("64 hex digits are a valid token"))
    }

    /// Reads the token from a file (its first line), e.g. one only its owner may read.
    pub fn from_file(path: &Path) -> Result<Token, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
        let first = text.lines().next().unwrap_or_default();
        Token::new(first).map_err(|why| format!("{}: {why}", path.display()))
    }

    /// The `Authorization` header value to send to peers.
    pub fn header(&self) -> &str {
        &self.header
    }

    /// The secret itself, to hand to the one peer it is for (a drone's credential, in the answer
    /// to its registration) or to store with its record.
    pub fn secret(&self) -> &str {
        &self.header["Bearer ".len()..]
    }

    /// True when `authorization` carries this token. The comparison takes the same time wherever
    /// the first difference is, so the answer time tells nothing about the token.
    pub fn admits(&self, authorization: Option<&str>) -> bool {
        let given = authorization.unwrap_or_default().as_bytes();
        let wanted = self.header.as_bytes();
        let mut difference = given.len() ^ wanted.len();
        for (i, &w) in wanted.iter().enumerate() {
            difference |= usize::from(w ^ given.get(i).copied().unwrap_or(!w));
        }
        difference == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<redacted>)")
    }
}

/// How much a client token may do; each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Every `GET`; task `env` values are shown as `***`.
    Read,
    /// + create and cancel tasks, and `/submit_task`.
    Submit,
    /// + drain and undrain drones.
    Operate,
    /// Everything, registering drones included: what the cluster token may.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Submit, Scope::Operate, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Submit => "submit",
            Scope::Operate => "operate",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(name: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == name)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who sent a request, as the front found out from its `Authorization` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No token: anyone. On an open hive (no cluster token) it may do what `admin` may.
    Anonymous,
    /// A person or a tool, by a client token; the cluster token is [`CLUSTER_TOKEN_NAME`], `admin`.
    Client { name: String, scope: Scope },
    /// On a queen: the drone at `address`, by the credential its registration was given.
    Drone { address: String },
    /// On a drone: one of its queens, by this drone's credential.
    Queen,
}

/// The field that carries a request's [`Identity`] from the front to the handlers. The front
/// sets it on every request and drops one a client sends.
pub const IDENTITY_FIELD: &str = "X-Hive-Identity";

impl Identity {
    /// The identity as [`IDENTITY_FIELD`] carries it: words without spaces inside (names and
    /// addresses are checked to have none).
    pub fn to_field(&self) -> String {
        match self {
            Identity::Anonymous => "anonymous".into(),
            Identity::Client { name, scope } => format!("client {name} {scope}"),
            Identity::Drone { address } => format!("drone {address}"),
            Identity::Queen => "queen".into(),
        }
    }

    /// The identity [`Identity::to_field`] wrote; `None` for anything else.
    pub fn from_field(field: &str) -> Option<Identity> {
        let words: Vec<&str> = field.split(' ').collect();
        match words.as_slice() {
            ["anonymous"] => Some(Identity::Anonymous),
            ["queen"] => Some(Identity::Queen),
            ["drone", address] => Some(Identity::Drone {
                address: address.to_string(),
            }),
            ["client", name, scope] => Some(Identity::Client {
                name: name.to_string(),
                scope: Scope::parse(scope)?,
            }),
            _ => None,
        }
    }

    /// The client token's name and scope, for an audit line; `None` for drones, queens and
    /// anonymous callers.
    pub fn client(&self) -> Option<(&str, Scope)> {
        match self {
            Identity::Client { name, scope } => Some((name, *scope)),
            _ => None,
        }
    }

    /// Whether it may see everything a `read` token may (task `env` values aside).
    pub fn reads(&self, open: bool) -> bool {
        match self {
            Identity::Anonymous => open,
            Identity::Client { .. } => true,
            Identity::Drone { .. } | Identity::Queen => false,
        }
    }

    /// Whether task `env` values are shown to it as they are (not as `***`).
    pub fn sees_secrets(&self, open: bool) -> bool {
        match self {
            Identity::Anonymous => open,
            Identity::Client { scope, .. } => *scope > Scope::Read,
            Identity::Drone { .. } | Identity::Queen => false,
        }
    }
}

/// The client tokens a queen takes: `--client-tokens FILE`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTokens {
    tokens: Vec<ClientToken>,
    /// The file they were read from, read again when it changes (see [`Gate::watch_client_tokens`]).
    file: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ClientToken {
    name: String,
    scope: Scope,
    token: Token,
}

/// Longest client token name: names appear in log lines.
const MAX_NAME_CHARS: usize = 63;

impl ClientTokens {
    /// Reads a client tokens file: one `NAME SCOPE SECRET` a line (blank lines and lines starting
    /// with `#` are skipped). Every mistake names its line; a name or a secret given twice, or a
    /// secret that is the cluster token's, is one.
    pub fn from_file(path: &Path, cluster: Option<&Token>) -> Result<ClientTokens, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the client tokens file {}: {e}", path.display()))?;
        let tokens = ClientTokens::parse(&text, cluster)
            .map_err(|why| format!("{}: {why}", path.display()))?;
        Ok(ClientTokens {
            file: Some(path.to_path_buf()),
            ..tokens
        })
    }

    fn parse(text: &str, cluster: Option<&Token>) -> Result<ClientTokens, String> {
        let mut tokens: Vec<ClientToken> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |why: String| format!("line {}: {why}", i + 1);
            let words: Vec<&str> = line.split_whitespace().collect();
            let [name, scope, secret] = words[..] else {
                return Err(at("a line is NAME SCOPE SECRET".into()));
            };
            if !valid_name(name) || name == CLUSTER_TOKEN_NAME {
                return Err(at(format!(
                    "{name:?} is not a token name: 1 to {MAX_NAME_CHARS} of A-Z a-z 0-9 . _ -, and not {CLUSTER_TOKEN_NAME:?}"
                )));
            }
            let scope = Scope::parse(scope).ok_or_else(|| {
                at(format!(
                    "{scope:?} is not a scope: read, submit, operate or admin"
                ))
            })?;
            let token = Token::new(secret).map_err(at)?;
            if cluster == Some(&token) {
                return Err(at(format!("the secret of {name:?} is the cluster token's")));
            }
            if tokens.iter().any(|t| t.name == name) {
                return Err(at(format!("the name {name:?} is given twice")));
            }
            if tokens.iter().any(|t| t.token == token) {
                return Err(at(format!("the secret of {name:?} is another token's too")));
            }
            tokens.push(ClientToken {
                name: name.to_string(),
                scope,
                token,
            });
        }
        Ok(ClientTokens { tokens, file: None })
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The client whose token `authorization` carries. Every token is compared, in constant
    /// time each, so the answer time tells nothing about which one matched.
    fn identify(&self, authorization: &str) -> Option<Identity> {
        let mut found = None;
        for client in &self.tokens {
            if client.token.admits(Some(authorization)) {
                found = Some(Identity::Client {
                    name: client.name.clone(),
                    scope: client.scope,
                });
            }
        }
        found
    }
}

/// A token name: what may stand in a log line and in [`IDENTITY_FIELD`].
fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_CHARS).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The credentials only the running role knows, looked up by the secret shown: on a queen, her
/// drones' (from the registry); on a drone, its own (from its registration).
pub trait Keyring: Send + Sync {
    /// The identity `authorization` (`Bearer <secret>`) proves, if it is one of these credentials.
    fn identify(&self, authorization: &str) -> Option<Identity>;
}

/// Which routes a role serves, for the permission table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleKind {
    Queen,
    Drone,
}

/// What a request needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// Anyone: liveness, the dashboard's page, and paths that only answer 404 or 405.
    Open,
    /// A client token of this scope or above (or an open hive).
    Scope(Scope),
    /// A drone's own credential (the route checks the attempts are its own).
    OwnDrone,
    /// On a drone: its queens' credential, never a client token.
    Queen,
    /// On a drone: its queens' credential, or the cluster token.
    QueenOrAdmin,
}

/// What `method path` needs on a larve of `role`: the one permission table.
fn need(role: RoleKind, method: &str, path: &str) -> Need {
    let reads = method == "GET" || method == "HEAD";
    match role {
        RoleKind::Queen => match (method, path) {
            (_, "/healthz") => Need::Open,
            (_, p) if p == "/ui" || p.starts_with("/ui/") => Need::Open,
            ("POST", "/reports" | "/lease") => Need::OwnDrone,
            ("POST", "/register") => Need::Scope(Scope::Admin),
            ("POST" | "DELETE", p) if p.starts_with("/drones/") && p.ends_with("/drain") => {
                Need::Scope(Scope::Operate)
            }
            ("POST", "/tasks" | "/submit_task") => Need::Scope(Scope::Submit),
            ("DELETE", p) if p.starts_with("/tasks/") => Need::Scope(Scope::Submit),
            _ if reads => Need::Scope(Scope::Read),
            _ => Need::Open,
        },
        RoleKind::Drone => match (method, path) {
            (_, "/healthz") => Need::Open,
            (_, p) if p == "/tasks" || p.starts_with("/tasks/") => Need::Queen,
            (_, p) if p == "/attempts" || p.starts_with("/attempts/") => Need::Queen,
            (_, "/do_task" | "/metrics") => Need::QueenOrAdmin,
            _ => Need::Open,
        },
    }
}

/// The front's gate: who a request is from and whether it may be made, decided on its head.
pub struct Gate {
    role: RoleKind,
    cluster: Option<Token>,
    /// Replaced whole when their file changes.
    clients: RwLock<ClientTokens>,
    keyring: Arc<dyn Keyring>,
    /// When each peer's last refusal was logged.
    refusals: Mutex<HashMap<IpAddr, Instant>>,
}

impl Gate {
    /// A gate for a larve of `role` with the cluster token `cluster` (`None`: an open hive),
    /// `clients`' tokens and the role's own credentials.
    pub fn new(
        role: RoleKind,
        cluster: Option<Token>,
        clients: ClientTokens,
        keyring: Arc<dyn Keyring>,
    ) -> Gate {
        Gate {
            role,
            cluster,
            clients: RwLock::new(clients),
            keyring,
            refusals: Mutex::new(HashMap::new()),
        }
    }

    /// Reads the client tokens' file again whenever it changes (looked at every
    /// [`CLIENT_TOKENS_POLL`]), for the life of the process: a token is handed out or revoked by
    /// editing the file, without a restart. A file that no longer reads (or parses) changes
    /// nothing, and is said once until it reads again. Nothing to do without a file.
    pub fn watch_client_tokens(self: &Arc<Self>) -> io::Result<()> {
        let Some(file) = self.clients.read().file.clone() else {
            return Ok(());
        };
        let gate = self.clone();
        thread::Builder::new()
            .name("client-tokens".into())
            .spawn(move || {
                let mut seen = stamp(&file);
                let mut failing = false;
                loop {
                    thread::sleep(CLIENT_TOKENS_POLL);
                    let now = stamp(&file);
                    if now == seen && !failing {
                        continue;
                    }
                    seen = now;
                    match ClientTokens::from_file(&file, gate.cluster.as_ref()) {
                        Ok(tokens) => {
                            if failing || *gate.clients.read() != tokens {
                                info!(
                                    "read the client tokens again from {}: {} tokens",
                                    file.display(),
                                    tokens.len()
                                );
                            }
                            failing = false;
                            *gate.clients.write() = tokens;
                        }
                        Err(why) if !failing => {
                            warn!("{why}; the client tokens stay as they were");
                            failing = true;
                        }
                        Err(_) => {}
                    }
                }
            })?;
        Ok(())
    }

    /// Whether the hive is open: no cluster token, so anyone may do what `admin` may.
    pub fn open(&self) -> bool {
        self.cluster.is_none()
    }

    /// Who sent `authorization`, and whether they may `method path`: their identity, or 401 (no
    /// token, or one nobody here issued) or 403 (a known token that may not do this). A refusal is
    /// logged, at most once a minute per peer.
    pub fn admit(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        peer: Option<SocketAddr>,
    ) -> Result<Identity, Error> {
        let decided = self.decide(method, path, authorization);
        if let Err(refusal) = &decided {
            self.log_refusal(method, path, peer, refusal);
        }
        decided
    }

    fn decide(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
    ) -> Result<Identity, Error> {
        let need = need(self.role, method, path);
        // A token nobody here issued proves nothing: its bearer is anyone (refused where a token
        // is needed, as if it had sent none).
        let identity = authorization
            .and_then(|authorization| self.identify(authorization))
            .unwrap_or(Identity::Anonymous);
        let allowed = match (&identity, need) {
            (_, Need::Open) => true,
            (Identity::Anonymous, Need::Scope(_) | Need::QueenOrAdmin) => self.open(),
            (Identity::Client { scope, .. }, Need::Scope(wanted)) => *scope >= wanted,
            (Identity::Client { scope, .. }, Need::QueenOrAdmin) => *scope == Scope::Admin,
            (Identity::Drone { .. }, Need::OwnDrone) => true,
            (Identity::Queen, Need::Queen | Need::QueenOrAdmin) => true,
            _ => false,
        };
        if allowed {
            return Ok(identity);
        }
        Err(match (identity, need) {
            (Identity::Anonymous, _) => Error::Unauthorized,
            (Identity::Client { name, scope }, Need::Scope(wanted)) => Error::Forbidden(format!(
                "the token {name:?} has the scope {scope}; {method} {path} needs {wanted}"
            )),
            (Identity::Client { .. }, Need::Queen) => Error::Forbidden(
                "a drone starts and stops attempts only for its queens, by its own credential; no client token may"
                    .into(),
            ),
            (Identity::Client { .. }, Need::OwnDrone) => Error::Forbidden(
                "only a drone, by its own credential, reports its attempts and renews its lease"
                    .into(),
            ),
            (_, need) => Error::Forbidden(format!(
                "{method} {path} is not for this caller ({})",
                match need {
                    Need::Scope(scope) => format!("it needs a client token of scope {scope}"),
                    Need::OwnDrone => "it is a drone's own route".into(),
                    Need::Queen | Need::QueenOrAdmin => "it is for this drone's queens".into(),
                    Need::Open => "it is open".into(),
                }
            )),
        })
    }

    /// The identity a bearer header proves, if any: the cluster token, a client token, or one of
    /// the role's credentials.
    fn identify(&self, authorization: &str) -> Option<Identity> {
        if self
            .cluster
            .as_ref()
            .is_some_and(|token| token.admits(Some(authorization)))
        {
            return Some(Identity::Client {
                name: CLUSTER_TOKEN_NAME.into(),
                scope: Scope::Admin,
            });
        }
        self.clients
            .read()
            .identify(authorization)
            .or_else(|| self.keyring.identify(authorization))
    }

    fn log_refusal(&self, method: &str, path: &str, peer: Option<SocketAddr>, refusal: &Error) {
        let now = Instant::now();
        if let Some(peer) = peer {
            let mut refusals = self.refusals.lock();
            if refusals
                .get(&peer.ip())
                .is_some_and(|last| now.duration_since(*last) < REFUSAL_LOG_EVERY)
            {
                return;
            }
            if refusals.len() >= REMEMBERED_REFUSERS {
                refusals.retain(|_, last| now.duration_since(*last) < REFUSAL_LOG_EVERY);
                if refusals.len() >= REMEMBERED_REFUSERS {
                    refusals.clear();
                }
            }
            refusals.insert(peer.ip(), now);
        }
        let from = peer.map_or_else(|| "an unknown peer".to_string(), |peer| peer.to_string());
        warn!(
            "refused {} {} from {from} ({}): {refusal}; further refusals of this peer are not logged for a minute",
            quoted(method),
            quoted(path),
            refusal.status()
        );
    }
}

/// What tells a file's contents changed: its inode, size and modification time (`None` while it
/// cannot be read).
fn stamp(file: &Path) -> Option<(u64, u64, i64, i64)> {
    let meta = std::fs::metadata(file).ok()?;
    Some((meta.ino(), meta.len(), meta.mtime(), meta.mtime_nsec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123";
    const ALICE: &str = "alice-secret-0123456789";
    const BOB: &str = "bob-secret-0123456789ab";

    #[test]
    fn admits_only_the_exact_bearer_header() {
        let token = Token::new(SECRET).unwrap();
        assert!(token.admits(Some(&format!("Bearer {SECRET}"))));
        for wrong in [
            None,
            Some(""),
            Some(SECRET),
            Some("Bearer "),
            Some("Bearer 0123456789abcdef012"),
            Some("Bearer 0123456789abcdef01234"),
            Some("Bearer 0123456789abcdef0124"),
            Some("bearer 0123456789abcdef0123"),
        ] {
            assert!(!token.admits(wrong), "{wrong:?}");
        }
    }

    #[test]
    fn refuses_weak_or_odd_tokens() {
        assert!(Token::new("short").is_err());
        assert!(Token::new("has a space in it, sadly").is_err());
        assert!(Token::new(&"x".repeat(MAX_TOKEN_CHARS + 1)).is_err());
        assert!(
            Token::new(&format!("{SECRET}\n")).is_ok(),
            "a file's trailing newline is fine"
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let token = Token::new(SECRET).unwrap();
        assert!(!format!("{token:?}").contains(SECRET));
    }

    #[test]
    fn generated_credentials_are_new_each_time() {
        let (a, b) = (Token::generate().unwrap(), Token::generate().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.secret().len(), CREDENTIAL_BYTES * 2);
    }

    #[test]
    fn identities_travel_in_one_field_and_back() {
        for identity in [
            Identity::Anonymous,
            Identity::Queen,
            Identity::Drone {
                address: "127.0.0.1:5001".into(),
            },
            Identity::Client {
                name: "alice".into(),
                scope: Scope::Operate,
            },
        ] {
            assert_eq!(Identity::from_field(&identity.to_field()), Some(identity));
        }
        for junk in ["", "client alice", "client alice root", "drone", "admin"] {
            assert_eq!(Identity::from_field(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn a_client_tokens_file_is_read_and_every_mistake_names_its_line() {
        let cluster = Token::new(SECRET).unwrap();
        let tokens = ClientTokens::parse(
            &format!("# people\n\nalice submit {ALICE}\n  bob   read   {BOB}  \n"),
            Some(&cluster),
        )
        .unwrap();
        assert_eq!(
            tokens.identify(&format!("Bearer {BOB}")),
            Some(Identity::Client {
                name: "bob".into(),
                scope: Scope::Read
            })
        );
        for (text, needle) in [
            (
                format!("alice {ALICE}"),
                "line 1: a line is NAME SCOPE SECRET",
            ),
            (format!("alice root {ALICE}"), "not a scope"),
            (format!("al ice read {ALICE}"), "NAME SCOPE SECRET"),
            (format!("cluster read {ALICE}"), "not a token name"),
            (format!("a/b read {ALICE}"), "not a token name"),
            ("alice read short".into(), "characters long"),
            (format!("alice read {SECRET}"), "the cluster token's"),
            (
                format!("alice read {ALICE}\nalice read {BOB}"),
                "line 2: the name \"alice\" is given twice",
            ),
            (
                format!("alice read {ALICE}\nbob read {ALICE}"),
                "another token's too",
            ),
        ] {
            let why = ClientTokens::parse(&text, Some(&cluster)).unwrap_err();
            assert!(why.contains(needle), "{text:?}: {why}");
        }
    }

    /// A keyring that knows one drone credential (on a queen) or one queen credential (on a drone).
    struct OneKey(&'static str, Identity);

    impl Keyring for OneKey {
        fn identify(&self, authorization: &str) -> Option<Identity> {
            (authorization == format!("Bearer {}", self.0)).then(|| self.1.clone())
        }
    }

    const DRONE_KEY: &str = "drone-credential-0123456789";

    fn queen_gate(cluster: Option<&str>) -> Gate {
        let cluster = cluster.map(|s| Token::new(s).unwrap());
        let clients = ClientTokens::parse(
            &format!("alice submit {ALICE}\nbob read {BOB}\n"),
            cluster.as_ref(),
        )
        .unwrap();
        let drone = Identity::Drone {
            address: "127.0.0.1:5001".into(),
        };
        Gate::new(
            RoleKind::Queen,
            cluster,
            clients,
            Arc::new(OneKey(DRONE_KEY, drone)),
        )
    }

    fn status(gate: &Gate, method: &str, path: &str, secret: Option<&str>) -> u16 {
        let header = secret.map(|s| format!("Bearer {s}"));
        match gate.admit(method, path, header.as_deref(), None) {
            Ok(_) => 200,
            Err(e) => e.status(),
        }
    }

    #[test]
    fn each_scope_is_allowed_and_refused_where_it_should_be() {
        let gate = queen_gate(Some(SECRET));
        let cases: &[(&str, &str, [u16; 5])] = &[
            // method, path: [no token, bob (read), alice (submit), cluster (admin), drone]
            ("GET", "/healthz", [200, 200, 200, 200, 200]),
            ("GET", "/tasks", [401, 200, 200, 200, 403]),
            ("GET", "/tasks/t1", [401, 200, 200, 200, 403]),
            ("GET", "/drones", [401, 200, 200, 200, 403]),
            ("GET", "/metrics", [401, 200, 200, 200, 403]),
            ("POST", "/tasks", [401, 403, 200, 200, 403]),
            ("DELETE", "/tasks/t1", [401, 403, 200, 200, 403]),
            ("POST", "/submit_task", [401, 403, 200, 200, 403]),
            ("POST", "/drones/drone-0/drain", [401, 403, 403, 200, 403]),
            ("POST", "/register", [401, 403, 403, 200, 403]),
            ("POST", "/reports", [401, 403, 403, 403, 200]),
            ("POST", "/lease", [401, 403, 403, 403, 200]),
        ];
        for (method, path, want) in cases {
            let got = [None, Some(BOB), Some(ALICE), Some(SECRET), Some(DRONE_KEY)]
                .map(|secret| status(&gate, method, path, secret));
            assert_eq!(&got, want, "{method} {path}");
        }
        assert_eq!(
            status(&gate, "GET", "/tasks", Some("unknown-secret-0123456789")),
            401
        );
        let refusal = gate
            .admit("POST", "/tasks", Some(&format!("Bearer {BOB}")), None)
            .unwrap_err();
        assert!(
            refusal.to_string().contains("has the scope read")
                && refusal.to_string().contains("needs submit"),
            "{refusal}"
        );
    }

    #[test]
    fn an_open_hive_lets_anyone_do_what_admin_may_but_not_what_a_drone_or_queen_may() {
        let gate = queen_gate(None);
        assert_eq!(status(&gate, "POST", "/tasks", None), 200);
        assert_eq!(status(&gate, "POST", "/register", None), 200);
        assert_eq!(status(&gate, "POST", "/reports", None), 401);
        assert_eq!(status(&gate, "POST", "/reports", Some(DRONE_KEY)), 200);
        assert_eq!(
            status(&gate, "POST", "/tasks", Some(BOB)),
            403,
            "a read token stays read"
        );
    }

    #[test]
    fn a_drone_takes_attempts_only_from_its_queens_credential() {
        let queen_key = "queen-side-credential-0123";
        let gate = Gate::new(
            RoleKind::Drone,
            Some(Token::new(SECRET).unwrap()),
            ClientTokens::default(),
            Arc::new(OneKey(queen_key, Identity::Queen)),
        );
        for (method, path) in [
            ("POST", "/tasks"),
            ("DELETE", "/attempts/0123abcd"),
            ("GET", "/attempts/0123abcd/logs"),
        ] {
            assert_eq!(status(&gate, method, path, None), 401, "{method} {path}");
            assert_eq!(
                status(&gate, method, path, Some(SECRET)),
                403,
                "{method} {path}"
            );
            assert_eq!(
                status(&gate, method, path, Some(queen_key)),
                200,
                "{method} {path}"
            );
        }
        assert_eq!(status(&gate, "POST", "/do_task", Some(SECRET)), 200);
        assert_eq!(status(&gate, "POST", "/do_task", Some(queen_key)), 200);
        assert_eq!(status(&gate, "POST", "/do_task", None), 401);
        assert_eq!(status(&gate, "GET", "/healthz", None), 200);
        let open = Gate::new(
            RoleKind::Drone,
            None,
            ClientTokens::default(),
            Arc::new(OneKey(queen_key, Identity::Queen)),
        );
        assert_eq!(
            status(&open, "POST", "/do_task", None),
            200,
            "the tutorial's queen"
        );
        assert_eq!(status(&open, "POST", "/tasks", None), 401);
    }
}
