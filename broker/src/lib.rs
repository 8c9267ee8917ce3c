//! A Socket.IO v5 chat broker over Engine.IO v4 WebSocket transport.
//!
//! Entry point: [`run`] serves a [`Config`] on a bound listener until the
//! shutdown token is cancelled.
pub mod config;

pub use config::Config;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Errors that stop the broker from starting.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
}

/// Serves `config` on `listener` until `shutdown` is cancelled, then closes
/// every connection gracefully and returns.
///
/// # Errors
/// [`StartError`] when the configuration cannot be used (bad key file,
/// unreadable revocation file, invalid values).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    config.validate()?;
    let _ = (listener, shutdown);
    todo!("broker under construction")
}
