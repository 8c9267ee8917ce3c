//! [`TestServer`]: one broker per test, on an ephemeral port of the loopback
//! interface, running on the test's own tokio runtime.

use std::net::SocketAddr;
use std::time::Duration;

use broker::socketio::SocketIo;
use broker::{Config, Namespaces, StartError};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::token::TokenBuilder;

/// How long any single expectation waits before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// The chat namespace of the default configuration.
pub const CHAT: &str = "/api/v1/chat";

/// The HS256 secret a [`TestServer`] uses when its config names none.
pub const TEST_SECRET: &str = "integration-test-secret-0123456789";

/// A broker serving one test.
///
/// Dropping it cancels the broker; [`TestServer::shutdown`] also waits for
/// `broker::run` to return and hands back its result.
pub struct TestServer {
    /// Where the broker listens.
    pub addr: SocketAddr,
    /// The configuration the broker was started with (listen and secret filled in).
    pub config: Config,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), StartError>>>,
}

impl TestServer {
    /// Binds `127.0.0.1:0` and spawns `broker::run` on the current runtime.
    /// A config without `jwt_secret` gets [`TEST_SECRET`].
    pub async fn start(config: Config) -> Self {
        let (listener, config) = bind(config).await;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(broker::run(config.clone(), listener, shutdown.clone()));
        Self { addr: config.listen, config, shutdown, task: Some(task) }
    }

    /// [`TestServer::start`]'s broker (the chat gateway), and its [`SocketIo`]:
    /// for a test that emits from the server side at a moment of its choosing.
    pub async fn start_with_io(config: Config) -> (Self, SocketIo) {
        let (listener, config) = bind(config).await;
        let (_, namespaces) = broker::chat_gateway(&config).expect("a usable test config");
        let (handed, io) = oneshot::channel();
        let background = move |io: SocketIo| {
            let _ = handed.send(io);
            std::future::ready(())
        };
        let server = Self::serve(listener, config, namespaces, Some(background));
        let io =
            tokio::time::timeout(WAIT, io).await.expect("the broker starts").expect("the broker's SocketIo");
        (server, io)
    }

    /// Binds `127.0.0.1:0` and serves the namespaces `handlers` makes (given
    /// the config with its secret filled in) with `broker::serve`: the
    /// broker's sessions, HTTP side and limits under an application of the
    /// test's own.
    pub async fn start_with_handlers(config: Config, handlers: impl FnOnce(&Config) -> Namespaces) -> Self {
        let (listener, config) = bind(config).await;
        let namespaces = handlers(&config);
        Self::serve(listener, config, namespaces, None::<fn(SocketIo) -> std::future::Ready<()>>)
    }

    /// Spawns `broker::serve` for `namespaces` (and `background`) on `listener`.
    fn serve<B: Future<Output = ()> + Send + 'static>(
        listener: TcpListener,
        config: Config,
        namespaces: Namespaces,
        background: Option<impl FnOnce(SocketIo) -> B + Send + 'static>,
    ) -> Self {
        let shutdown = CancellationToken::new();
        let serve = broker::serve(config.clone(), listener, shutdown.clone(), namespaces, background);
        let task = tokio::spawn(serve);
        Self { addr: config.listen, config, shutdown, task: Some(task) }
    }

    /// The value of metric `name` (a full series name such as
    /// `broker_limit_refusals_total{limit="head_size"}`) on `GET /metrics`.
    ///
    /// # Panics
    /// When the series is missing.
    pub async fn metric(&self, name: &str) -> u64 {
        match self.try_metric(name).await {
            Ok(value) => value,
            Err(text) => panic!("no metric {name} in:\n{text}"),
        }
    }

    /// The value of metric `name`, or what `/metrics` answered instead.
    ///
    /// # Errors
    /// The response text when the series is not in it (or it was refused).
    pub async fn try_metric(&self, name: &str) -> Result<u64, String> {
        let text = crate::http::get(self.addr, "/metrics", &[]).await.text();
        text.lines()
            .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
            .and_then(|value| value.trim().parse().ok())
            .ok_or(text)
    }

    /// Waits (at most [`WAIT`]) until metric `name` reads `value`.
    ///
    /// # Panics
    /// When it does not in time; the message gives the last value seen.
    pub async fn wait_for_metric(&self, name: &str, value: u64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let seen = self.try_metric(name).await;
            if seen == Ok(value) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "metric {name} is {seen:?}, expected {value} within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A broker with the default configuration.
    pub async fn start_default() -> Self {
        Self::start(Config::default()).await
    }

    /// The WebSocket URL of the Engine.IO endpoint, without extra query.
    #[must_use]
    pub fn url(&self) -> String {
        format!("ws://{}{}?EIO=4&transport=websocket", self.addr, self.config.path)
    }

    /// The Engine.IO endpoint path as configured, e.g. `/socket.io/`.
    #[must_use]
    pub fn path(&self) -> &str {
        &self.config.path
    }

    /// The HS256 secret the broker verifies tokens with.
    #[must_use]
    pub fn secret(&self) -> &str {
        self.config.effective_secret()
    }

    /// A token for `sub` signed with this server's secret, valid for an hour.
    #[must_use]
    pub fn token(&self, sub: impl Into<Value>) -> TokenBuilder {
        TokenBuilder::new(sub).secret(self.secret())
    }

    /// Cancels the shutdown token without waiting.
    pub fn cancel(&self) {
        self.shutdown.cancel();
    }

    /// Waits for `broker::run` to return (after [`TestServer::cancel`]).
    ///
    /// # Panics
    /// When `run` panicked or did not return within the shutdown timeout plus [`WAIT`].
    pub async fn join(mut self) -> Result<(), StartError> {
        let task = self.task.take().expect("the run task is awaited once");
        let limit = self.config.shutdown_timeout + WAIT;
        match tokio::time::timeout(limit, task).await {
            Ok(Ok(result)) => result,
            Ok(Err(join_error)) => panic!("broker::run panicked: {join_error}"),
            Err(_) => panic!("broker::run did not return within {limit:?} of the shutdown"),
        }
    }

    /// Cancels the broker and waits for `run` to return.
    pub async fn shutdown(self) -> Result<(), StartError> {
        self.cancel();
        self.join().await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Binds `127.0.0.1:0` for `config` and names the address in it; a config
/// without `jwt_secret` gets [`TEST_SECRET`].
async fn bind(mut config: Config) -> (TcpListener, Config) {
    if config.jwt_secret.is_none() {
        config.jwt_secret = Some(TEST_SECRET.to_owned());
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding 127.0.0.1:0");
    config.listen = listener.local_addr().expect("a bound listener has an address");
    (listener, config)
}
