//! The one way Hive calls another larve (or etcd): HTTP/1.1 with JSON, over TLS when the larve has
//! it, a timeout on every call, kept-alive connections, and failures sorted into the few kinds the
//! callers decide on.

use std::fmt;
use std::io::{self, BufRead, BufReader};
use std::time::Duration;

use std::net::SocketAddr;

use ureq::Agent;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::{DefaultConnector, NextTimeout};

use crate::auth::Token;
use crate::tls::ClientTls;

/// Largest answer body read from a peer: a larve's answers are a few hundred bytes, a drone's list
/// of attempts or a page of tasks some kilobytes, a task with its output some hundred.
const MAX_REPLY_BYTES: u64 = 16 * 1024 * 1024;

/// An answer of any status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    /// What an answer says, for a person: its JSON `error`, or the start of its body on one line
    /// (a tutorial larve answers errors with Flask's HTML pages).
    pub fn said(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| Some(v.get("error")?.as_str()?.to_string()))
            .unwrap_or_else(|| {
                let start = String::from_utf8_lossy(&self.body[..self.body.len().min(200)]);
                crate::logging::one_line(start.trim()).into_owned()
            })
    }
}

/// Why a call to another larve did not bring back a 2xx answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// Nothing listens there: the larve is down (or the address is wrong).
    Refused,
    /// No complete answer within the timeout: the larve is frozen, overloaded or unreachable.
    TimedOut,
    /// It answered, but not with 2xx.
    Status(u16),
    /// Anything else: a name that does not resolve, a reset, an answer that is not HTTP.
    Failed(String),
}

impl CallError {
    /// A 4xx other than 408 and 429 (which say "later"): the peer understood and refused, so
    /// retrying the same request cannot help.
    pub fn is_client_error(&self) -> bool {
        matches!(self, CallError::Status(code) if (400..500).contains(code) && *code != 408 && *code != 429)
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Refused => write!(f, "connection refused"),
            CallError::TimedOut => write!(f, "timed out"),
            CallError::Status(code) => write!(f, "answered HTTP {code}"),
            CallError::Failed(why) => write!(f, "{why}"),
        }
    }
}

impl From<ureq::Error> for CallError {
    fn from(e: ureq::Error) -> Self {
        match e {
            ureq::Error::Timeout(_) => CallError::TimedOut,
            ureq::Error::StatusCode(code) => CallError::Status(code),
            ureq::Error::ConnectionFailed => CallError::Refused,
            ureq::Error::Io(io) => match io.kind() {
                io::ErrorKind::ConnectionRefused => CallError::Refused,
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => CallError::TimedOut,
                _ => CallError::Failed(io.to_string()),
            },
            other => CallError::Failed(other.to_string()),
        }
    }
}

/// What a larve shows the peers it calls, and how it trusts them: a token (the cluster token, to
/// register; calls to one drone or queen show a credential of their own instead, see
/// [`Client::bearing`]), and with TLS its CA and certificate (every call is then HTTPS).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Credentials {
    pub token: Option<Token>,
    pub tls: Option<ClientTls>,
}

/// A pool of kept-alive connections to other larves. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct Client {
    agent: Agent,
    /// Sent on every call as `Authorization: Bearer`, when there is one.
    token: Option<Token>,
    /// Ask the peer to close each connection after answering.
    close: bool,
    /// `http` or, with TLS, `https`.
    scheme: &'static str,
}

/// Buffers per connection. ureq's defaults (128 KiB each way) cost a queen that keeps connections
/// to a thousand drones hundreds of megabytes; a larve's messages are a few hundred bytes.
const BUFFER_BYTES: usize = 16 * 1024;
const MAX_REPLY_HEADER_BYTES: usize = 8 * 1024;

/// Idle connections are closed after this long, well before a larve's front door closes them
/// ([`crate::front::HEAD_DEADLINE`]), so a call never picks a connection the peer is closing.
const MAX_IDLE_AGE: Duration = Duration::from_secs(5);

impl Client {
    /// A client that keeps up to `idle_per_host` idle connections to each larve and `idle_total` in
    /// all, so steady traffic reuses connections instead of opening one per call (and leaving a
    /// TIME_WAIT socket behind each time, which at thousands of calls a second runs out of ports).
    /// Keep `idle_total` small: ureq's pool work on each returned connection grows with the square
    /// of its size. A client with `idle_total` 0 asks each peer to close the connection after
    /// answering, so the TIME_WAIT socket is the peer's, not ours. It shows the peers
    /// `credentials`.
    pub fn new(idle_per_host: usize, idle_total: usize, credentials: Credentials) -> Client {
        let mut config = Agent::config_builder()
            .http_status_as_error(true)
            .max_redirects(0)
            .max_idle_connections(idle_total)
            .max_idle_connections_per_host(idle_per_host)
            .max_idle_age(MAX_IDLE_AGE)
            .input_buffer_size(BUFFER_BYTES)
            .output_buffer_size(BUFFER_BYTES)
            .max_response_header_size(MAX_REPLY_HEADER_BYTES)
            .user_agent(concat!("hive-larve/", env!("CARGO_PKG_VERSION")));
        if let Some(tls) = &credentials.tls {
            config = config.tls_config(tls.ureq_config());
        }
        Client {
            agent: Agent::with_parts(
                config.build(),
                DefaultConnector::default(),
                IpFirst::default(),
            ),
            token: credentials.token,
            close: idle_total == 0,
            scheme: if credentials.tls.is_some() {
                "https"
            } else {
                "http"
            },
        }
    }

    /// The same client (and pool), showing `bearer` instead: a drone's credential, for calls to
    /// that drone or from it (see `auth.rs`); `None` shows nothing.
    pub fn bearing(&self, bearer: Option<Token>) -> Client {
        Client {
            agent: self.agent.clone(),
            token: bearer,
            close: self.close,
            scheme: self.scheme,
        }
    }

    /// `GET {scheme}://{address}{path}`; the 2xx body, or why not, within `timeout`.
    pub fn get(&self, address: &str, path: &str, timeout: Duration) -> Result<Vec<u8>, CallError> {
        let request = self.agent.get(self.url(address, path));
        let request = self.authorize(request);
        let mut reply = request
            .config()
            .timeout_global(Some(timeout))
            .build()
            .call()?;
        read_reply(&mut reply)
    }

    /// `DELETE {scheme}://{address}{path}`; the 2xx body, or why not, within `timeout`.
    pub fn delete(
        &self,
        address: &str,
        path: &str,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        let request = self.agent.delete(self.url(address, path));
        let mut reply = self
            .authorize(request)
            .config()
            .timeout_global(Some(timeout))
            .build()
            .call()?;
        read_reply(&mut reply)
    }

    /// `method {scheme}://{address}{path}`, with a JSON body when one is given; the answer whatever its
    /// status (the API's errors say why in their body), its body up to [`MAX_REPLY_BYTES`], within
    /// `timeout`. For the command-line client, which shows users what the queen said.
    pub fn exchange(
        &self,
        method: &str,
        address: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        timeout: Duration,
    ) -> Result<Reply, CallError> {
        let mut request = ureq::http::Request::builder()
            .method(method)
            .uri(self.url(address, path))
            .header("Content-Type", "application/json");
        if let Some(token) = &self.token {
            request = request.header("Authorization", token.header());
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = request
            .body(body)
            .map_err(|e| CallError::Failed(format!("not a request: {e}")))?;
        let request = self
            .agent
            .configure_request(request)
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build();
        let mut reply = self.agent.run(request)?;
        let status = reply.status().as_u16();
        let body = reply
            .body_mut()
            .with_config()
            .limit(MAX_REPLY_BYTES)
            .read_to_vec()?;
        Ok(Reply { status, body })
    }

    /// `POST {scheme}://{address}{path}` with a JSON body; the 2xx body, or why not, within `timeout`.
    /// The tutorial's Flask larve only reads JSON sent as `application/json`, so that is always set.
    pub fn post_json(
        &self,
        address: &str,
        path: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        read_reply(&mut self.send(address, path, body, timeout)?)
    }

    /// `POST {scheme}://{address}{path}` with a JSON body; the answer whatever its status (for peers
    /// whose error answers say why, like etcd's gateway), its body up to `max_bytes`, within
    /// `timeout`.
    pub fn post_for_reply(
        &self,
        address: &str,
        path: &str,
        body: &serde_json::Value,
        timeout: Duration,
        max_bytes: u64,
    ) -> Result<Reply, CallError> {
        let mut reply = self.send(address, path, body, timeout)?;
        let status = reply.status().as_u16();
        let body = reply
            .body_mut()
            .with_config()
            .limit(max_bytes)
            .read_to_vec()?;
        Ok(Reply { status, body })
    }

    /// `POST {scheme}://{address}{path}` with a JSON body, for an answer that streams: its status, and
    /// a reader of its body as it arrives, with `headers` added to the request. The connection and
    /// the answer's head must come within `timeout` each; the whole call, stream included, ends
    /// after `lifetime` (etcd's watch sends nothing while nothing changes, so only a limit tells a
    /// quiet stream from a dead peer).
    pub fn post_for_stream(
        &self,
        address: &str,
        path: &str,
        body: &serde_json::Value,
        headers: &[(&str, &str)],
        (timeout, lifetime): (Duration, Duration),
    ) -> Result<(u16, impl BufRead + Send + use<>), CallError> {
        let mut request = self.request(address, path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let reply = request
            .config()
            .timeout_global(Some(lifetime))
            .timeout_connect(Some(timeout))
            .timeout_recv_response(Some(timeout))
            .http_status_as_error(false)
            .build()
            .send(body.to_string().as_bytes())?;
        let status = reply.status().as_u16();
        let reader = reply.into_body().into_with_config().reader();
        Ok((status, BufReader::new(reader)))
    }

    /// `GET {scheme}://{address}{path}`, for an answer that streams: its status, the value of its
    /// field `field` (if any), and a reader of its body as it arrives. The connection and the
    /// answer's head must come within `timeout` each; the whole call ends after `lifetime` (a
    /// stream that goes quiet cannot be told from a peer that is gone but by a limit).
    pub fn get_for_stream(
        &self,
        address: &str,
        path: &str,
        field: &str,
        (timeout, lifetime): (Duration, Duration),
    ) -> Result<(u16, Option<String>, BufReader<impl io::Read + Send + use<>>), CallError> {
        let request = self.authorize(self.agent.get(self.url(address, path)));
        let reply = request
            .config()
            .timeout_global(Some(lifetime))
            .timeout_connect(Some(timeout))
            .timeout_recv_response(Some(timeout))
            .http_status_as_error(false)
            .build()
            .call()?;
        let status = reply.status().as_u16();
        let value = reply
            .headers()
            .get(field)
            .and_then(|value| value.to_str().ok())
            .map(String::from);
        let reader = reply.into_body().into_with_config().reader();
        Ok((status, value, BufReader::new(reader)))
    }

    fn send(
        &self,
        address: &str,
        path: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<ureq::http::Response<ureq::Body>, CallError> {
        Ok(self
            .request(address, path)
            .config()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .send(body.to_string().as_bytes())?)
    }

    /// A JSON `POST {scheme}://{address}{path}` with the headers every call carries.
    fn request(
        &self,
        address: &str,
        path: &str,
    ) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        let request = self.agent.post(self.url(address, path));
        self.authorize(request)
            .header("Content-Type", "application/json")
    }

    fn url(&self, address: &str, path: &str) -> String {
        format!("{}://{address}{path}", self.scheme)
    }

    /// Adds the headers every call carries: the token, and `Connection: close` without a pool.
    fn authorize<B>(&self, mut request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        if let Some(token) = &self.token {
            request = request.header("Authorization", token.header());
        }
        if self.close {
            request = request.header("Connection", "close");
        }
        request
    }
}

/// Resolves `ip:port` addresses on the calling thread. ureq's default resolver starts a thread for
/// every call that has a timeout, to bound a DNS lookup, even when the host is an IP address and the
/// connection is pooled: a thread per task and per probe. Names still go to it.
#[derive(Debug, Default)]
struct IpFirst(DefaultResolver);

impl Resolver for IpFirst {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &ureq::config::Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let literal = uri
            .authority()
            .and_then(|authority| authority.as_str().parse::<SocketAddr>().ok());
        match literal {
            Some(addr) => {
                let mut addrs = self.empty();
                addrs.push(addr);
                Ok(addrs)
            }
            None => self.0.resolve(uri, config, timeout),
        }
    }
}

/// The body of a 2xx answer. ureq hands 3xx answers back as they are (redirects are off), and
/// those are not success either.
fn read_reply(reply: &mut ureq::http::Response<ureq::Body>) -> Result<Vec<u8>, CallError> {
    if !reply.status().is_success() {
        return Err(CallError::Status(reply.status().as_u16()));
    }
    Ok(reply
        .body_mut()
        .with_config()
        .limit(MAX_REPLY_BYTES)
        .read_to_vec()?)
}
