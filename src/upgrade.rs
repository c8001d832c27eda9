//! Tunnels for protocol upgrades (WebSocket and others): once both sides have switched,
//! bytes are copied both ways until either side closes or the server is forced to stop.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::server::Signals;

/// Spawns the tunnel between the client's and the upstream's upgraded connections.
pub fn tunnel(client: OnUpgrade, upstream: OnUpgrade, name: String, mut signals: Signals) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(upstream = %name, error = %e, "upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        tokio::select! {
            result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match result {
                Ok((up, down)) => tracing::debug!(upstream = %name, bytes_up = up, bytes_down = down, "tunnel closed"),
                Err(e) => tracing::debug!(upstream = %name, error = %e, "tunnel broke off"),
            },
            _ = signals.forced() => tracing::debug!(upstream = %name, "tunnel closed by shutdown"),
        }
    });
}
