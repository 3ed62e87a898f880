//! The `authgate` command line: run, check, demo, hash-password, keygen, explain.
//!
//! Exit codes: 0 clean shutdown, 1 bad config or start-up failure (one-line reason),
//! 2 usage (clap's own exit code for usage errors).

use std::io::{IsTerminal, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "authgate",
    version,
    about = "A reverse-proxy authentication gateway for legacy backends"
)]
struct Cli {
    /// The config file, for plain `authgate [-c PATH]` (the same as `authgate run`).
    #[command(flatten)]
    config: ConfigArg,
    /// Log format on stderr (default: text on a terminal, json otherwise).
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

/// `-c PATH`: only on the commands that read a config (run, check, explain), so the help of
/// the others does not offer an option they would ignore.
#[derive(Args, Clone, Default)]
struct ConfigArg {
    /// The config file [default: gateway.toml].
    #[arg(short = 'c', long = "config", value_name = "PATH")]
    config: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway (the default).
    Run(ConfigArg),
    /// Validate the config and print every problem with its key path.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Also fetch each issuer's keys and ping the session store; exit 1 if one fails.
        #[arg(long)]
        probe: bool,
    },
    /// Run a gateway with a built-in echo upstream, an ephemeral secret and a demo user.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9091")]
        admin_listen: SocketAddr,
        /// Access tokens live this many seconds (default 2 h), with a silent-refresh window
        /// of half of it and no leeway: to watch a browser's cookies being renewed.
        #[arg(long, value_parser = clap::value_parser!(u64).range(2..=86_400))]
        access_ttl_secs: Option<u64>,
    },
    /// Read one password from stdin and print an Argon2id PHC string for the users file.
    HashPassword,
    /// Write private.pem and public.pem for an asymmetric algorithm.
    Keygen {
        #[arg(long, value_parser = ["ES256", "RS256", "EdDSA"])]
        alg: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Show how a request would be handled: canonical path, route, auth mode, upstream.
    ///
    /// No token is sent, so a required route counts as refused. Signing keys are not
    /// needed (explain signs nothing). Exit 0 when the request would be forwarded (or
    /// answered by the gateway's own endpoints), 1 when it would be refused or the config
    /// is invalid.
    Explain {
        #[command(flatten)]
        config: ConfigArg,
        method: String,
        /// A URL or a bare path such as `/a/../b?x=1`.
        url: String,
    },
}

/// What a command reports besides an error.
enum Outcome {
    Done,
    /// `explain`: the request would be refused (exit 1, nothing more to print).
    Refused,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let cmd = cli.cmd.unwrap_or(Cmd::Run(ConfigArg::default()));
    // `authgate -c PATH check` is accepted like `authgate check -c PATH`; a top-level `-c`
    // before a command that reads no config is a usage error rather than silently ignored.
    let top = cli.config.config;
    let config = |own: ConfigArg| {
        own.config
            .or_else(|| top.clone())
            .unwrap_or_else(|| PathBuf::from("gateway.toml"))
    };
    if top.is_some()
        && matches!(
            cmd,
            Cmd::Demo { .. } | Cmd::HashPassword | Cmd::Keygen { .. }
        )
    {
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "-c/--config is only used by run, check and explain",
            )
            .exit();
    }
    let result = match cmd {
        Cmd::Run(c) => run(&config(c)).map(|()| Outcome::Done),
        Cmd::Check { config: c, probe } => check(&config(c), probe),
        Cmd::Demo {
            listen,
            admin_listen,
            access_ttl_secs,
        } => demo(listen, admin_listen, access_ttl_secs).map(|()| Outcome::Done),
        Cmd::HashPassword => hash_password().map(|()| Outcome::Done),
        Cmd::Keygen { alg, out } => authgate::tokens::keygen::keygen(&alg, &out)
            .map(|()| {
                println!(
                    "wrote {} and {}",
                    out.join("private.pem").display(),
                    out.join("public.pem").display()
                );
                Outcome::Done
            })
            .map_err(anyhow::Error::from),
        Cmd::Explain {
            config: c,
            method,
            url,
        } => explain(&config(c), &method, &url),
    };
    match result {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Refused) => ExitCode::from(1),
        Err(e) => {
            eprintln!("authgate: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(format: Option<LogFormat>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        Some(LogFormat::Json) => true,
        Some(LogFormat::Text) => false,
        None => !std::io::stderr().is_terminal(),
    };
    // The access lines follow the same choice (audit lines are JSON whatever it is).
    authgate::logs::set_format(if json {
        authgate::logs::Format::Json
    } else {
        authgate::logs::Format::Text
    });
    // Colours only for a person at a terminal, and never against NO_COLOR (no-color.org:
    // set and not empty); a redirected file gets plain text.
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal() && !no_color)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

fn load(path: &Path) -> anyhow::Result<authgate::config::Loaded> {
    authgate::config::load(path).map_err(|e| {
        for p in &e.0 {
            eprintln!("{p}");
        }
        anyhow::anyhow!("{}: {} problem(s)", path.display(), e.0.len())
    })
}

/// One CPU (by affinity or cgroup quota): a current-thread runtime, which skips the
/// work-stealing scheduler's cross-thread bookkeeping (about a tenth more requests per second
/// on one core, BENCHMARKS.md). More CPUs: the multi-thread runtime, one worker per CPU.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut builder = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    builder.enable_all().build().context("starting the runtime")
}

fn run(path: &Path) -> anyhow::Result<()> {
    let loaded = load(path)?;
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    runtime()?.block_on(async {
        // SIGTERM and SIGINT first, like SIGHUP below: one sent as soon as the `listening`
        // line appears must shut down cleanly, not find the default action still in place.
        let stop = authgate::server::StopSignals::register();
        let app = authgate::app::App::build(loaded.config)
            .await
            .context("opening the session store")?;
        // Reloads (and the SIGHUP handler) first: a SIGHUP soon after the `listening` line
        // must reload, not find the default action (which ends the process) still in place.
        authgate::reload::spawn(app.clone(), path.to_path_buf());
        tokio::task::yield_now().await;
        // The error names the key and address (`server.listen 127.0.0.1:8080: ...`).
        let handle = authgate::server::start(app).await?;
        handle.run_until(stop).await;
        // The last requests' access lines, before the process ends.
        authgate::server::flush_access_log(std::time::Duration::from_secs(2));
        Ok(())
    })
}

fn check(path: &Path, probe: bool) -> anyhow::Result<Outcome> {
    let loaded = load(path)?;
    for w in &loaded.warnings {
        println!("warning: {w}");
    }
    println!("{}: ok", path.display());
    if !probe {
        return Ok(Outcome::Done);
    }
    let (report, ok) = runtime()?.block_on(authgate::app::probe(&loaded.config));
    print!("{report}");
    Ok(if ok { Outcome::Done } else { Outcome::Refused })
}

fn demo(listen: SocketAddr, admin: SocketAddr, access_ttl_secs: Option<u64>) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let stop = authgate::server::StopSignals::register();
        let demo = authgate::demo::start_with(listen, admin, access_ttl_secs).await?;
        println!("{}", demo.walkthrough);
        demo.handle.run_until(stop).await;
        authgate::server::flush_access_log(std::time::Duration::from_secs(2));
        drop(demo.dir);
        Ok(())
    })
}

fn hash_password() -> anyhow::Result<()> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("reading the password from stdin")?;
    let password = input
        .strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(&input);
    anyhow::ensure!(!password.is_empty(), "empty password on stdin");
    println!("{}", authgate::tokens::keygen::hash_password(password)?);
    Ok(())
}

/// Prints how the request would be handled; `Refused` (exit 1) when it would not be forwarded.
fn explain(path: &Path, method: &str, url: &str) -> anyhow::Result<Outcome> {
    let (loaded, notes) = authgate::config::load_for_explain(path).map_err(|e| {
        for p in &e.0 {
            eprintln!("{p}");
        }
        anyhow::anyhow!("{}: {} problem(s)", path.display(), e.0.len())
    })?;
    for n in &notes {
        println!("note:       {n}");
    }
    let (text, verdict) = authgate::explain::explain(&loaded.config, method, url);
    print!("{text}");
    Ok(match verdict {
        authgate::explain::Verdict::Refused => Outcome::Refused,
        authgate::explain::Verdict::Forwarded | authgate::explain::Verdict::Endpoint => {
            Outcome::Done
        }
    })
}
