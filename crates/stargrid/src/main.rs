//! `stargrid`: the command-line entry point. Parses arguments and hands each subcommand to
//! its module; no placement logic lives here (that is the `sched` crate's job).

mod agent_cmd;
mod bench;
mod bench_fleet;
mod bench_frontends;
mod bench_gateway;
mod bench_history;
mod bench_live;
mod bench_outage;
mod bench_queue;
mod bench_sandboxes;
mod bench_scale;
mod client;
mod config;
mod cost_view;
mod demo;
mod events_cmd;
mod fleet_apply;
mod fleet_cmd;
mod frontend_cmd;
mod gateway_cmd;
mod history_cmd;
mod human_time;
mod listing;
mod load_cmd;
mod logging;
mod place;
mod quiet_pipe;
mod rollout_cmd;
mod sandbox_cmd;
mod sbatch;
mod scenario;
mod server_cmd;
mod sim_cmd;
mod sim_frag;
mod standin;
mod up;
mod workload_file;

use anyhow::Result;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

/// Stargrid: a control plane for frontier-AI compute.
#[derive(Parser)]
#[command(name = "stargrid", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How a command reaches the server: given only to the commands that talk to one (the client
/// commands and the agent; see [`command`]).
#[derive(Args, Debug, Default)]
struct Connection {
    /// The server's base URL (default http://127.0.0.1:7070, or the config file's `server`).
    #[arg(long, env = "STARGRID_SERVER")]
    server: Option<String>,
    /// Bearer token for the server (see `<data-dir>/admin.token` and `stargrid token`), or the
    /// config file's `token` / `token_file`.
    #[arg(long, env = "STARGRID_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the bearer token (an agent takes its credential this way only).
    #[arg(long, env = "STARGRID_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
    /// The certificate authority (PEM) that signed an https:// server's certificate, or the
    /// config file's `ca`.
    #[arg(long, env = "STARGRID_CA")]
    ca: Option<std::path::PathBuf>,
    /// A config file with `server` and `token` or `token_file` (default:
    /// ~/.config/stargrid/config.toml when it exists).
    #[arg(long, env = "STARGRID_CONFIG")]
    config: Option<std::path::PathBuf>,
}

/// The command line: [`Cli`], with [`Connection`]'s flags on the commands that talk to a
/// server (and on each of `sandbox`'s), and nowhere else.
fn command() -> clap::Command {
    let mut talks: Vec<String> =
        client::ClientCommand::augment_subcommands(clap::Command::new("c"))
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect();
    talks.push("agent".into());
    talks.push("frontend".into());
    talks.push("gateway".into());
    let cli = Cli::command().mut_subcommand("fleet", |fleet| {
        fleet_cmd::FleetCommand::TALKING
            .into_iter()
            .fold(fleet, |fleet, n| fleet.mut_subcommand(n, with_connection))
    });
    talks.into_iter().fold(cli, |cli, name| {
        cli.mut_subcommand(name, |sub| {
            if sub.has_subcommands() {
                let nested: Vec<String> = sub
                    .get_subcommands()
                    .map(|c| c.get_name().to_string())
                    .collect();
                nested
                    .into_iter()
                    .fold(sub, |sub, n| sub.mut_subcommand(n, with_connection))
            } else {
                with_connection(sub)
            }
        })
    })
}

/// `sub` with [`Connection`]'s flags, keeping its own description (the flags' struct would
/// otherwise lend it its doc comment).
fn with_connection(sub: clap::Command) -> clap::Command {
    let about = sub.get_about().cloned();
    let long_about = sub.get_long_about().cloned();
    let sub = Connection::augment_args(sub);
    let sub = match about {
        Some(a) => sub.about(a),
        None => sub,
    };
    match long_about {
        Some(a) => sub.long_about(a),
        None => sub,
    }
}

/// The connection flags the command line gave the command that talks to a server.
fn connection(matches: &clap::ArgMatches) -> Result<config::Flags> {
    let Some((_, mut leaf)) = matches.subcommand() else {
        return Ok(config::Flags::default());
    };
    if let Some((_, nested)) = leaf.subcommand() {
        leaf = nested;
    }
    let c = Connection::from_arg_matches(leaf).map_err(|e| anyhow::anyhow!(e))?;
    Ok(config::Flags {
        server: c.server,
        token: c.token,
        token_file: c.token_file,
        ca: c.ca,
        config: c.config,
    })
}

#[derive(Subcommand)]
enum Command {
    /// Generate a demo fleet, place a mix of training gangs, inference replicas and sandbox
    /// batches through the engine, drain a spine, and print every decision.
    Demo(demo::DemoArgs),
    /// Generate, import, export or inspect fleets.
    #[command(subcommand)]
    Fleet(fleet_cmd::FleetCommand),
    /// Place the workloads of a file on a fleet, or play a scenario (tenants + timed events)
    /// through the queue, and print each decision or why it was not made.
    Place(place::PlaceArgs),
    /// Replay traces through the real queue and engine in virtual time.
    #[command(subcommand)]
    Sim(sim_cmd::SimCommand),
    /// Print the built-in cost catalogue (example prices and commitments; edit a copy and
    /// pass it with `--catalogue`), or check a catalogue file.
    Catalogue {
        /// A catalogue file to check instead (prints its providers, prices and commitments).
        #[arg(long)]
        check: Option<std::path::PathBuf>,
    },
    /// Measure the engine and print the figures.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Run the control plane: HTTP API, durable journal, the queue in real time.
    Server(server_cmd::ServerArgs),
    /// Run a node agent: heartbeats, runs the tasks the server assigns.
    Agent(agent_cmd::AgentArgs),
    /// Run a frontend of a cell's writer (`--server`, an admin token): reads and agents
    /// answered here, changes passed on to the writer.
    Frontend(frontend_cmd::FrontendArgs),
    /// Run a request gateway for the cell's inference services: `/{tenant}/{service}/…` to
    /// their ready replicas, balanced on in-flight requests; reports their load for
    /// autoscaling.
    Gateway(gateway_cmd::GatewayArgs),
    /// Send requests to a URL from a closed loop of clients (optionally ramped) and say how
    /// they went.
    Load(load_cmd::LoadArgs),
    /// A stand-in model server for demos and tests: streams tokens with a delay on `$PORT`.
    #[command(name = "model-standin")]
    ModelStandin(standin::StandinArgs),
    /// A local control plane in one command: server, agents for every node, a demo mix.
    Up(up::UpArgs),
    #[command(flatten)]
    Client(client::ClientCommand),
    /// The init an interactive sandbox runs (started by the agent inside the sandbox, talked
    /// to over its standard input).
    #[command(name = "sandbox-init", hide = true)]
    SandboxInit,
}

fn main() -> Result<()> {
    quiet_pipe::install();
    let matches = command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match run(cli, &matches) {
        Err(e) if quiet_pipe::is_broken_pipe(&e) => Ok(()),
        other => other,
    }
}

fn run(cli: Cli, matches: &clap::ArgMatches) -> Result<()> {
    match cli.command {
        Command::Demo(a) => demo::run(&a),
        Command::Fleet(c) => fleet_cmd::run(c, || config::resolve(connection(matches)?)),
        Command::Place(a) => place::run(&a),
        Command::Sim(c) => sim_cmd::run(&c),
        Command::Catalogue { check } => cost_view::catalogue_cmd(check.as_deref()),
        Command::Bench(c) => bench::run(&c),
        Command::Server(a) => server_cmd::run(&a),
        Command::Agent(a) => agent_cmd::run(&config::resolve(connection(matches)?)?, &a),
        Command::Frontend(a) => frontend_cmd::run(&config::resolve(connection(matches)?)?, &a),
        Command::Gateway(a) => gateway_cmd::run(&config::resolve(connection(matches)?)?, &a),
        Command::Load(a) => load_cmd::run(&a),
        Command::ModelStandin(a) => standin::run(&a),
        Command::Up(a) => up::run(&a),
        Command::Client(c) => client::run(&config::resolve(connection(matches)?)?, &c),
        Command::SandboxInit => agent::init::main().map_err(anyhow::Error::msg),
    }
}
