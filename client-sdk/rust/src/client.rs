//! The client: connecting (timeouts, TLS, keep-alive), and the one path every call takes —
//! deadline, retry of UNAVAILABLE, status to typed error.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use crate::error::{Error, Result};
use crate::options::CallOptions;
use crate::retry::RetryPolicy;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the generated stubs send requests through: a [`Channel`], or any gRPC service the caller
/// wraps around one.
pub(crate) type Transport =
    BoxCloneSyncService<http::Request<Body>, http::Response<Body>, TransportError>;

/// The transport's error, boxed. A named type rather than a bare `Box<dyn Error>`: with the
/// latter, rustc cannot prove the calls' futures `Send` (its higher-ranked `From` check on the
/// erased `dyn` lifetime fails). tonic reads the code out of [`Error::source`], as it would from
/// the box.
#[derive(Debug)]
pub(crate) struct TransportError(BoxError);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// A connection to a Temporal State Engine server, with every call of its five services.
///
/// Cheap to clone (clones share the connection) and safe to share between tasks. Each call takes
/// its own options struct, whose [`Default`] is the usual choice:
///
/// ```no_run
/// use serde_json::json;
/// use temporal_state_client::{Client, CreateEntityTypeOptions};
///
/// # async fn run() -> temporal_state_client::Result<()> {
/// let client = Client::connect("http://127.0.0.1:50051").await?;
/// let player_type = client
///     .create_entity_type(
///         "player_profile",
///         &json!({"type": "object", "properties": {"score": {"type": "integer"}}}),
///         &CreateEntityTypeOptions::default().description("A player of our game"),
///     )
///     .await?;
/// let same = client.get_entity_type("player_profile", &Default::default()).await?;
/// assert_eq!(player_type.id, same.id);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    transport: Transport,
    defaults: Arc<Defaults>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("request_timeout", &self.defaults.request_timeout)
            .field("retry", &self.defaults.retry)
            .finish_non_exhaustive()
    }
}

/// What a call uses when its options do not say.
#[derive(Debug)]
struct Defaults {
    request_timeout: Duration,
    retry: RetryPolicy,
    /// `Bearer <token>`, sent as `authorization` with every call.
    authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl Client {
    /// Connects with every setting at its default (see [`ClientBuilder`]).
    ///
    /// `endpoint` is a URL (`http://host:port`, or `https://...` with the `tls` feature); a bare
    /// `host:port` means `http://host:port`.
    ///
    /// ```no_run
    /// # async fn run() -> temporal_state_client::Result<()> {
    /// let client = temporal_state_client::Client::connect("127.0.0.1:50051").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect(endpoint: impl Into<String>) -> Result<Self> {
        Self::builder(endpoint).connect().await
    }

    /// Starts configuring a client for `endpoint` (a URL, or `host:port` for plain HTTP/2).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use temporal_state_client::{Client, RetryPolicy};
    ///
    /// # async fn run() -> temporal_state_client::Result<()> {
    /// let client = Client::builder("http://127.0.0.1:50051")
    ///     .connect_timeout(Duration::from_secs(2))
    ///     .request_timeout(Duration::from_secs(10))
    ///     .retry(RetryPolicy::default().max_attempts(6))
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn builder(endpoint: impl Into<String>) -> ClientBuilder {
        ClientBuilder::new(endpoint.into())
    }

    /// The stubs' transport, for the generated clients of [`crate::proto`].
    pub(crate) fn transport(&self) -> Transport {
        self.transport.clone()
    }

    /// Runs a unary call: the deadline of each attempt, retries of UNAVAILABLE, statuses made
    /// typed errors. Returns the answer and the number of attempts made.
    pub(crate) async fn unary<Req, Resp, F, Fut>(
        &self,
        call: &'static str,
        options: &CallOptions,
        request: Req,
        send: F,
    ) -> (Result<Resp>, u32)
    where
        Req: Clone,
        F: Fn(Transport, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, tonic::Status>>,
    {
        self.call(call, options, true, request, send).await
    }

    /// [`Self::unary`] for calls whose answer outlives the deadline (streams): the deadline bounds
    /// the wait for the first answer only, and is not sent to the server.
    pub(crate) async fn call<Req, Resp, F, Fut>(
        &self,
        call: &'static str,
        options: &CallOptions,
        deadline_on_server: bool,
        request: Req,
        send: F,
    ) -> (Result<Resp>, u32)
    where
        Req: Clone,
        F: Fn(Transport, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let timeout = options.timeout.unwrap_or(self.defaults.request_timeout);
        let policy = options.retry.as_ref().unwrap_or(&self.defaults.retry);
        policy
            .run(call, || {
                let mut req = tonic::Request::new(request.clone());
                if let Some(value) = &self.defaults.authorization {
                    req.metadata_mut().insert("authorization", value.clone());
                }
                if deadline_on_server {
                    req.set_timeout(timeout);
                }
                let answer = send(self.transport(), req);
                async move {
                    match tokio::time::timeout(timeout, answer).await {
                        Ok(Ok(response)) => Ok(response.into_inner()),
                        Ok(Err(status)) => Err(Error::from_status(status)),
                        Err(_) => Err(Error::DeadlineExceeded {
                            message: format!("{call}: no answer within {timeout:?}"),
                        }),
                    }
                }
            })
            .await
    }
}

/// Settings of a [`Client`]; every one has a default, documented on its method.
///
/// ```no_run
/// use std::time::Duration;
/// use temporal_state_client::Client;
///
/// # async fn run() -> temporal_state_client::Result<()> {
/// // Connects on first use instead of now: handy when the server may start later.
/// let client = Client::builder("127.0.0.1:50051")
///     .keep_alive_interval(Duration::from_secs(30))
///     .connect_lazy()?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ClientBuilder {
    endpoint: String,
    connect_timeout: Duration,
    request_timeout: Duration,
    keep_alive_interval: Option<Duration>,
    retry: RetryPolicy,
    user_agent: String,
    bearer_token: Option<String>,
    #[cfg(feature = "tls")]
    tls: Option<tonic::transport::ClientTlsConfig>,
}

impl std::fmt::Debug for ClientBuilder {
    /// Every setting but the bearer token, which is a secret: only whether there is one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("endpoint", &self.endpoint)
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("keep_alive_interval", &self.keep_alive_interval)
            .field("retry", &self.retry)
            .field("user_agent", &self.user_agent)
            .field(
                "bearer_token",
                &self.bearer_token.as_ref().map(|_| "<secret>"),
            )
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    fn new(endpoint: String) -> Self {
        Self {
            endpoint,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            keep_alive_interval: None,
            retry: RetryPolicy::default(),
            user_agent: concat!("temporal-state-client/", env!("CARGO_PKG_VERSION")).into(),
            bearer_token: None,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// Longest wait for a connection (TCP, and TLS when used) to be made, on connecting and on
    /// every reconnection. Default: 5 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Deadline of each attempt of a call, unless the call's options set their own `timeout`;
    /// also sent to the server as the gRPC deadline. For [`Client::subscribe`] it bounds the wait
    /// for the stream to open only. Default: 30 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sends HTTP/2 pings at this interval, also while idle, so that a dead connection is noticed
    /// (and replaced) before a call needs it. Default: none.
    pub fn keep_alive_interval(mut self, interval: Duration) -> Self {
        self.keep_alive_interval = Some(interval);
        self
    }

    /// How calls answered UNAVAILABLE are retried, unless a call's options set their own.
    /// Default: [`RetryPolicy::default()`] (4 attempts, backoff from 100 ms).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// The `user-agent` sent with every call. Default: `temporal-state-client/<version>`.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// An API key or a JWT, sent as `authorization: Bearer <token>` with every call, for a
    /// server with authentication on. Default: none. Use TLS (`https://`) when it travels
    /// beyond a trusted network.
    ///
    /// ```no_run
    /// # async fn run() -> temporal_state_client::Result<()> {
    /// let key = std::env::var("TSE_API_KEY").unwrap_or_default();
    /// let client = temporal_state_client::Client::builder("https://state.example.internal")
    ///     .bearer_token(key)
    ///     .connect()
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.bearer_token = Some(token.into());
        self
    }

    /// TLS settings (certificate authority, client identity, server name). Implies TLS for the
    /// endpoint. Default: none, and `https://` endpoints trust the system's root certificates.
    ///
    /// ```no_run
    /// use temporal_state_client::Client;
    /// use tonic::transport::{Certificate, ClientTlsConfig};
    ///
    /// # async fn run(ca_pem: Vec<u8>) -> temporal_state_client::Result<()> {
    /// let tls = ClientTlsConfig::new()
    ///     .ca_certificate(Certificate::from_pem(ca_pem))
    ///     .domain_name("state.example.internal");
    /// let client = Client::builder("https://state.example.internal:443").tls(tls).connect().await?;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls(mut self, config: tonic::transport::ClientTlsConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// Connects now: fails with [`Error::Connect`] if the server cannot be reached within the
    /// connect timeout.
    pub async fn connect(self) -> Result<Client> {
        self.authorization()?;
        let endpoint = self.endpoint()?;
        let channel = endpoint.connect().await.map_err(|source| Error::Connect {
            endpoint: self.endpoint.clone(),
            source,
        })?;
        Ok(self.with_channel(channel))
    }

    /// Connects on the first call instead of now (and reconnects whenever needed). A call made
    /// while the server cannot be reached fails with [`Error::Unavailable`], after the retries of
    /// the [`RetryPolicy`].
    pub fn connect_lazy(self) -> Result<Client> {
        self.authorization()?;
        let endpoint = self.endpoint()?;
        Ok(self.with_channel(endpoint.connect_lazy()))
    }

    /// A client over a channel made elsewhere; this builder's connection settings (endpoint,
    /// connect timeout, keep-alive, user agent, TLS) do not apply to it, its call settings
    /// (request timeout, retry policy) do.
    pub fn with_channel(self, channel: Channel) -> Client {
        self.with_service(channel)
    }

    /// A client over any gRPC service, for example a [`Channel`] wrapped in tower layers of your
    /// own (authentication, metrics, ...). As with [`Self::with_channel`], only the call settings
    /// of this builder apply.
    ///
    /// ```no_run
    /// use temporal_state_client::Client;
    /// use tonic::transport::Channel;
    ///
    /// # async fn run() -> temporal_state_client::Result<()> {
    /// let channel = Channel::from_static("http://127.0.0.1:50051").connect_lazy();
    /// let traced = tower::ServiceBuilder::new()
    ///     .map_request(|req: http::Request<tonic::body::Body>| {
    ///         println!("calling {}", req.uri().path());
    ///         req
    ///     })
    ///     .service(channel);
    /// let client = Client::builder("unused").with_service(traced);
    /// # Ok(())
    /// # }
    /// ```
    pub fn with_service<S>(self, service: S) -> Client
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
            + Clone
            + Send
            + Sync
            + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        // A token that cannot travel in a header was refused by `connect`; here it is dropped
        // with a warning rather than sent half-way.
        let authorization = self.authorization().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "bearer token not sent");
            None
        });
        Client {
            transport: BoxCloneSyncService::new(
                service.map_err(|e: S::Error| TransportError(e.into())),
            ),
            defaults: Arc::new(Defaults {
                request_timeout: self.request_timeout,
                retry: self.retry,
                authorization,
            }),
        }
    }

    /// The `authorization` header value of the bearer token, if any.
    fn authorization(
        &self,
    ) -> Result<Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>> {
        let Some(token) = &self.bearer_token else {
            return Ok(None);
        };
        format!("Bearer {}", token.trim())
            .parse()
            .map(Some)
            .map_err(|_| Error::InvalidEndpoint {
                endpoint: self.endpoint.clone(),
                reason: "the bearer token must be printable ASCII".into(),
            })
    }

    fn endpoint(&self) -> Result<Endpoint> {
        let invalid = |reason: String| Error::InvalidEndpoint {
            endpoint: self.endpoint.clone(),
            reason,
        };
        let url = if self.endpoint.contains("://") {
            self.endpoint.clone()
        } else {
            format!("http://{}", self.endpoint)
        };
        #[cfg(not(feature = "tls"))]
        if url.starts_with("https://") {
            return Err(invalid(
                "https:// needs the `tls` feature of temporal-state-client".into(),
            ));
        }
        let mut endpoint = Endpoint::from_shared(url)
            .map_err(|e| invalid(e.to_string()))?
            .connect_timeout(self.connect_timeout)
            .user_agent(self.user_agent.clone())
            .map_err(|e| invalid(format!("user agent: {e}")))?;
        if let Some(interval) = self.keep_alive_interval {
            endpoint = endpoint
                .http2_keep_alive_interval(interval)
                .keep_alive_while_idle(true);
        }
        #[cfg(feature = "tls")]
        {
            let tls = match (&self.tls, endpoint.uri().scheme_str()) {
                (Some(config), _) => Some(config.clone()),
                (None, Some("https")) => {
                    Some(tonic::transport::ClientTlsConfig::new().with_native_roots())
                }
                (None, _) => None,
            };
            if let Some(tls) = tls {
                endpoint = endpoint
                    .tls_config(tls)
                    .map_err(|e| invalid(format!("tls: {e}")))?;
            }
        }
        Ok(endpoint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_host_port_means_plain_http() {
        let e = Client::builder("127.0.0.1:50051").endpoint().unwrap();
        assert_eq!(e.uri().to_string(), "http://127.0.0.1:50051/");
    }

    #[test]
    fn malformed_endpoints_are_refused_naming_them() {
        let e = Client::builder("http://exa mple:1")
            .connect_lazy()
            .unwrap_err();
        assert!(
            matches!(&e, Error::InvalidEndpoint { endpoint, .. } if endpoint == "http://exa mple:1"),
            "{e}"
        );
    }
}
