//! The `stagedoor` command: run the proxy, check a configuration, make secrets.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use stagedoor::{Config, Server};

/// An identity-aware reverse proxy for Backstage and other internal tools.
#[derive(Debug, Parser)]
#[command(name = "stagedoor", version, about)]
struct Cli {
    /// Configuration file (TOML). `STAGEDOOR_*` environment variables override it.
    #[arg(long, short, global = true, env = "STAGEDOOR_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Validate the configuration, read the files it names, and print the effective
    /// configuration with secrets redacted. Exits 2 if anything is wrong.
    CheckConfig,
    /// Print fresh random secrets.
    Keygen,
}

/// Exit status for an invalid configuration.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    stagedoor::install_crypto_provider();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Keygen => keygen(),
        Command::CheckConfig => check_config(cli.config),
        Command::Run => run(cli.config),
    }
}

fn load(path: Option<PathBuf>) -> Result<Config, ExitCode> {
    Config::load(path.as_deref()).map_err(|e| {
        eprintln!("stagedoor: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn check_config(path: Option<PathBuf>) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let rendered = config.to_toml();
    let lints = stagedoor::policy::lint(&config.policy);
    if let Err(e) = stagedoor::App::build(config) {
        eprintln!("stagedoor: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    print!("{rendered}");
    for lint in &lints {
        eprintln!("stagedoor: warning: {lint}");
    }
    eprintln!("stagedoor: configuration is valid");
    ExitCode::SUCCESS
}

fn keygen() -> ExitCode {
    match stagedoor::secret::random_token() {
        Ok(token) => {
            println!(
                "# 32 random bytes, base64url: a session.cookie_secret. Keep it out of version control."
            );
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("stagedoor: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: Option<PathBuf>) -> ExitCode {
    let config = match load(path.clone()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(e) = stagedoor::telemetry::init(&config.log) {
        eprintln!("stagedoor: {e}");
        return ExitCode::from(EXIT_CONFIG);
    }
    // One CPU to run on (an affinity mask or a cgroup quota of one, as in a sidecar with a
    // one-CPU limit): one thread does everything, without the work-stealing machinery.
    let one_cpu = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let mut builder = if one_cpu {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stagedoor: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        // Installed before the listeners open, so a SIGTERM that arrives during start-up is
        // a graceful stop, not the default action (death without draining).
        let stop = match shutdown_signal() {
            Ok(stop) => stop,
            Err(e) => {
                eprintln!("stagedoor: cannot listen for signals: {e}");
                return ExitCode::FAILURE;
            }
        };
        // SIGHUP would otherwise end the process.
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(hangup) => hangup,
            Err(e) => {
                eprintln!("stagedoor: cannot listen for signals: {e}");
                return ExitCode::FAILURE;
            }
        };
        let server = match Server::bind(config).await {
            Ok(s) => s,
            Err(stagedoor::server::StartError::Config(e)) => {
                eprintln!("stagedoor: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
            Err(e) => {
                tracing::error!("{e}");
                return ExitCode::FAILURE;
            }
        };
        let running = match server.start() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("cannot start: {e}");
                return ExitCode::FAILURE;
            }
        };
        // Reload on SIGHUP, and when the configuration file changes.
        // clap has already read STAGEDOOR_CONFIG into the path.
        let file = path;
        let mut stamp = file.as_deref().and_then(stagedoor::file_stamp);
        let mut poll = tokio::time::interval(Duration::from_secs(2));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = hangup.recv() => reload(&running, file.as_deref(), "SIGHUP"),
                _ = poll.tick() => {
                    let now = file.as_deref().and_then(stagedoor::file_stamp);
                    if now != stamp {
                        stamp = now;
                        reload(&running, file.as_deref(), "the configuration file changed");
                    }
                }
            }
        }
        tracing::info!("shutting down: draining connections");
        if running.shutdown().await {
            tracing::info!("stopped");
        }
        ExitCode::SUCCESS
    })
}

/// Reads the configuration again and applies it to new requests; a configuration that does
/// not load or build is refused and the running one stays.
fn reload(running: &stagedoor::server::Running, file: Option<&Path>, why: &str) {
    let result = Config::load(file).and_then(|config| running.reload(config));
    match result {
        Ok(()) => tracing::info!(trigger = why, "reloaded the configuration"),
        Err(e) => tracing::error!(
            trigger = why,
            "reload refused, the previous configuration stays in force: {e}"
        ),
    }
}

/// Listens for SIGTERM (Kubernetes) and SIGINT (Ctrl-C) now; the future resolves on either.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}
