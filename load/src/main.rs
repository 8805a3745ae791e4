//! `dashclaw-realtime-load`: opens many SSE connections to a hub (or any SSE server through URL
//! and body templates), publishes sequenced, timestamped events, and reports connect times,
//! delivery accounting (expected, delivered, missing, duplicate, out-of-order), latency
//! percentiles, throughput and, given the server's pid, its memory per idle connection and CPU
//! per million deliveries. Loopback targets only; every run is bounded by `--max-duration`.
//!
//! Above `--per-process` clients it runs child processes of itself (`worker`, hidden), each
//! holding a shard of the clients and answering JSON-line commands on stdin/stdout.

mod cli;
mod client;
mod embedded;
mod procfs;
mod publish;
mod report;
mod scenarios;
mod shard;
mod stats;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Worker = cli.command {
        return match shard::worker_main().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("dashclaw-realtime-load worker: {e}");
                ExitCode::from(2)
            }
        };
    }
    let json = match &cli.command {
        Command::Fanout(o) | Command::Idle(o) | Command::Burst(o) | Command::ResumeStorm(o) => {
            o.json
        }
        Command::RollingRestart(r) => r.opts.json,
        Command::Worker => false,
    };
    match scenarios::run(&cli.command).await {
        Ok(report) => {
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("dashclaw-realtime-load: {e}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                print!("{}", report.human());
            }
            if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("dashclaw-realtime-load: {e}");
            ExitCode::from(2)
        }
    }
}
