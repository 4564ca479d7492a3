//! The `loopmind` command line.
//!
//! Map: [`runner`] is the one catalog flow (sources checked, jobs built,
//! resume, album passes, summary) with [`follow`] following jobs to their
//! ends on a queue; [`local`] feeds it files (`loopmind master`, in-process
//! queue, folder store) and [`catalog`] a manifest (`loopmind coordinator`,
//! [`broker`]'s RabbitMQ queue, S3), [`manifest`] reading it into
//! render requests (`loopmind_worker::request`, the one check); [`album`]
//! computes album offsets; [`summary`] prints and saves what happened;
//! [`demo`] writes a synthetic multi-section song to master. `worker` runs
//! the worker crate's consumer; the hidden `render-child` subcommand is one
//! isolated render, started by `master` and `worker` alike
//! (`loopmind_worker::isolate`).

mod album;
mod broker;
mod catalog;
mod demo;
mod follow;
mod local;
mod manifest;
mod runner;
mod service;
mod summary;

use anyhow::{Context, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use loopmind_dsp::targets::{self, Target};
use loopmind_worker::config::{LogFormat, Settings};
use loopmind_worker::isolate::Isolation;
use loopmind_worker::RenderRequest;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "loopmind",
    version,
    about = "Automated mastering for every platform target"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Master files (or every audio file under directories) for each target.
    Master(Box<MasterArgs>),
    /// Runs one render for a parent process (internal).
    #[command(name = "render-child", hide = true)]
    RenderChild,
    /// Write a synthetic multi-section song and master it: hear a result in one command.
    Demo {
        /// Where the song and its masters go.
        #[arg(long, default_value = "demo-out")]
        out: PathBuf,
    },
    /// List the platform targets.
    Targets,
    /// Publish a catalog's jobs to RabbitMQ and follow them to the end.
    Coordinator {
        /// Catalog manifest: a local path or s3://bucket/key.
        #[arg(long)]
        catalog: String,
        /// Settings file (TOML); LOOPMIND_* environment variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The job service: an HTTP API for a label's backend (see docs/api.md).
    Serve(service::ServeArgs),
    /// API keys of the job service.
    Keys {
        #[command(subcommand)]
        command: service::KeysCommand,
    },
    /// Consume jobs from RabbitMQ and render them until stopped (SIGTERM).
    Worker {
        /// Settings file (TOML); LOOPMIND_* environment variables override it.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
pub struct MasterArgs {
    /// Audio files or directories.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output directory: one folder per track.
    #[arg(long)]
    out: PathBuf,
    /// Every option that changes a master (`--targets`, `--mode`, ...).
    #[command(flatten)]
    request: RenderRequest,
    /// A custom target's integrated loudness (LUFS), with --ceiling.
    #[arg(long, allow_negative_numbers = true, requires = "ceiling")]
    lufs: Option<f64>,
    /// A custom target's true-peak ceiling (dBTP), with --lufs.
    #[arg(long, allow_negative_numbers = true, requires = "lufs")]
    ceiling: Option<f64>,
    /// Output sample rate for every target (default: each target's, else the source's).
    #[arg(long)]
    rate: Option<u32>,
    /// Output bit depth for every target: 16 or 24.
    #[arg(long)]
    bits: Option<u16>,
    /// Tracks mastered at once (default: one per core).
    #[arg(long)]
    jobs: Option<usize>,
    /// The inputs are one album: one shared loudness offset keeps their
    /// relative levels, and the album as a whole lands on each target.
    #[arg(long, num_args = 0..=1, default_missing_value = "album")]
    album: Option<String>,
    /// Render exactly the plan of this master_settings.json (a single
    /// track; its mode, sliders, codec check, sections and, unless
    /// --targets is given, targets; flags given explicitly win).
    #[arg(long, conflicts_with_all = ["arrangement", "emotion_graph", "album", "reference"])]
    settings: Option<PathBuf>,
    /// Settings file (TOML) for the `[render]` limits and budgets;
    /// LOOPMIND_RENDER__* environment variables override it.
    #[arg(long)]
    config: Option<PathBuf>,
}

impl MasterArgs {
    /// The command line's targets with `--lufs/--ceiling`, `--rate` and
    /// `--bits` applied (checked with the rest of the request).
    fn targets(&self) -> Vec<Target> {
        let mut out = self.request.targets().to_vec();
        if let (Some(lufs), Some(ceiling)) = (self.lufs, self.ceiling) {
            out.push(Target::custom(lufs, ceiling));
        }
        for t in &mut out {
            t.rate = self.rate.or(t.rate);
            t.bits = self.bits.unwrap_or(t.bits);
        }
        out
    }
}

/// Local commands take their filter from RUST_LOG; the services from the
/// `log.level` setting.
fn init_logs(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        b.json().flatten_event(true).with_current_span(true).init();
    } else {
        b.init();
    }
}

fn main() {
    // The matches stay: `--settings` asks which flags were given explicitly.
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let given = matches.subcommand_matches("master");
    let code = match run(cli, given) {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

fn settings(config: Option<&std::path::Path>) -> Result<Settings> {
    let s = Settings::load(config)?;
    init_logs(&s.log.level, s.log.format == LogFormat::Json);
    Ok(s)
}

/// Local commands' settings (`[render]` limits, `[coordinator]` deadlines,
/// `queue.delivery_limit` for retries) from the settings file and the
/// environment, and the render isolation they give.
fn local_settings(config: Option<&std::path::Path>) -> Result<(Settings, Isolation)> {
    let s = Settings::load(config)?;
    let iso = Isolation::new(s.render.clone())
        .context("cannot find the running executable to start renders")?;
    Ok((s, iso))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Ok(true) when every track succeeded.
fn run(cli: Cli, given: Option<&clap::ArgMatches>) -> Result<bool> {
    match cli.command {
        Command::Master(args) => {
            init_logs(&std::env::var("RUST_LOG").unwrap_or("warn".into()), false);
            let (s, iso) = local_settings(args.config.as_deref())?;
            local::master(&args, given.expect("master's matches"), &s, &iso)
        }
        Command::Demo { out } => {
            init_logs(&std::env::var("RUST_LOG").unwrap_or("warn".into()), false);
            let (s, iso) = local_settings(None)?;
            demo::run(&out, &s, &iso)
        }
        Command::RenderChild => Ok(loopmind_worker::isolate::child_main(init_logs) == 0),
        Command::Coordinator { catalog, config } => {
            let s = settings(config.as_deref())?;
            runtime()?.block_on(catalog::run(s, &catalog))
        }
        Command::Worker { config } => {
            let s = settings(config.as_deref())?;
            let rt = runtime()?;
            let done = rt.block_on(async {
                let shutdown = loopmind_worker::shutdown::Shutdown::on_signals();
                loopmind_worker::consumer::run_worker(s, shutdown).await
            });
            // Every job is settled: nothing left behind may hold the exit.
            rt.shutdown_timeout(std::time::Duration::from_secs(5));
            done?;
            Ok(true)
        }
        Command::Serve(args) => {
            let s = settings(args.config.as_deref())?;
            let rt = runtime()?;
            rt.block_on(service::serve(args, s))?;
            rt.shutdown_timeout(std::time::Duration::from_secs(5));
            Ok(true)
        }
        Command::Keys { command } => {
            init_logs(&std::env::var("RUST_LOG").unwrap_or("warn".into()), false);
            runtime()?.block_on(service::keys(command))?;
            Ok(true)
        }
        Command::Targets => {
            println!(
                "{:<14} {:>6} {:>9} {:>8} {:>5}",
                "target", "LUFS", "ceiling", "rate", "bits"
            );
            for name in targets::preset_names() {
                let t = targets::preset(name).expect("listed preset");
                let rate = t.rate.map_or("source".to_string(), |r| r.to_string());
                println!(
                    "{:<14} {:>6.1} {:>9.1} {:>8} {:>5}",
                    t.name, t.lufs, t.ceiling_dbtp, rate, t.bits
                );
            }
            Ok(true)
        }
    }
}
