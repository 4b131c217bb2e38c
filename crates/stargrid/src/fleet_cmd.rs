//! `stargrid fleet gen|import|export|show`.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use fleet::generate::{generate, GenSpec};
use fleet::slurm::{SlurmFormat, SlurmImport};
use model::{Fleet, InstanceCatalog, PricingKind};
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum FleetCommand {
    /// Generate a synthetic fleet (default: 499,968 GB200 GPUs in NVL72 domains + 100,000 CPU hosts).
    Gen(GenArgs),
    /// Import AWS `describe-instance-topology` JSON or a Slurm topology.conf.
    Import(ImportArgs),
    /// Write a fleet file as Slurm topology.conf (tree or block) or as a fleet file again.
    Export(ExportArgs),
    /// Print a fleet's totals.
    Show(ShowArgs),
    /// Apply a fleet file to a running server: nodes, domains and pools it adds join; nodes
    /// it lacks leave (at once when empty, else drained until their work ends).
    Apply(crate::fleet_apply::ApplyArgs),
    /// Print a running server's fleet file (what was applied last, with nodes still leaving).
    Current(crate::fleet_apply::CurrentArgs),
    /// Let agents register nodes the fleet file does not declare: the names and pools they may
    /// use, and whether they join without an approval (`--off` stops it).
    Allow(crate::fleet_apply::AllowArgs),
    /// The registration rule and the nodes waiting for approval.
    Registrations(crate::fleet_apply::RegistrationsArgs),
    /// Approve waiting registrations (a host list): their nodes join the fleet.
    Approve(crate::fleet_apply::ApproveArgs),
    /// Reject waiting registrations (a host list): they are dropped.
    Reject(crate::fleet_apply::ApproveArgs),
}

impl FleetCommand {
    /// Whether the command talks to a server (and takes the connection flags).
    pub const TALKING: [&'static str; 6] = [
        "apply",
        "current",
        "allow",
        "registrations",
        "approve",
        "reject",
    ];
}

#[derive(Args)]
pub struct GenArgs {
    /// GPUs (rounded down to whole NVL72 domains).
    #[arg(long, default_value_t = 499_968)]
    pub gpus: u64,
    /// CPU hosts (192 vCPUs each).
    #[arg(long, default_value_t = 100_000)]
    pub cpu_hosts: u64,
    /// Providers to spread over, from aws, gcp, azure, oci (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "aws,gcp,azure,oci")]
    pub clouds: Vec<String>,
    /// Share of each zone's NVLink domains bought on demand (the rest is committed).
    #[arg(long, default_value_t = 0.0)]
    pub on_demand_share: f64,
    /// Share of each zone's NVLink domains bought as spot capacity.
    #[arg(long, default_value_t = 0.0)]
    pub spot_share: f64,
    /// Output fleet file (default: standard output).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

impl GenArgs {
    pub fn spec(&self) -> Result<GenSpec> {
        let mut spec = GenSpec {
            gpus: self.gpus,
            cpu_hosts: self.cpu_hosts,
            on_demand_share: self.on_demand_share,
            spot_share: self.spot_share,
            ..GenSpec::default()
        };
        for c in &self.clouds {
            if !spec.clouds.iter().any(|s| &s.cloud == c) {
                bail!("--clouds: unknown provider '{c}' (expected some of aws, gcp, azure, oci)");
            }
        }
        spec.clouds.retain(|s| self.clouds.contains(&s.cloud));
        Ok(spec)
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ImportFormat {
    /// JSON printed by `aws ec2 describe-instance-topology` (one or more pages).
    AwsTopology,
    /// Slurm topology.conf (topology/tree or topology/block).
    SlurmTopology,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Pricing {
    Committed,
    OnDemand,
    Spot,
}

impl From<Pricing> for PricingKind {
    fn from(p: Pricing) -> Self {
        match p {
            Pricing::Committed => PricingKind::Committed,
            Pricing::OnDemand => PricingKind::OnDemand,
            Pricing::Spot => PricingKind::Spot,
        }
    }
}

#[derive(Args)]
pub struct ImportArgs {
    /// Input format.
    #[arg(long)]
    pub format: ImportFormat,
    /// Input files (several AWS pages may be given).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Output fleet file (default: standard output).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// TOML file with extra `[[instance_types]]`.
    #[arg(long)]
    pub types: Option<PathBuf>,
    /// Slurm only: instance type of every node.
    #[arg(long, default_value = "p6e-gb200.36xlarge")]
    pub instance_type: String,
    /// Slurm only: provider name.
    #[arg(long, default_value = "onprem")]
    pub cloud: String,
    /// Slurm only: region name.
    #[arg(long, default_value = "site")]
    pub region: String,
    /// Slurm only: zone name.
    #[arg(long, default_value = "zone0")]
    pub zone: String,
    /// Pricing of the imported capacity (AWS: of instances outside capacity blocks).
    #[arg(long, value_enum)]
    pub pricing: Option<Pricing>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// Slurm topology/tree.
    SlurmTree,
    /// Slurm topology/block (NVLink domains as blocks).
    SlurmBlock,
    /// Stargrid fleet file.
    Toml,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Fleet file.
    pub fleet: PathBuf,
    /// Output format.
    #[arg(long)]
    pub format: ExportFormat,
    /// Output file (default: standard output).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// TOML file with extra `[[instance_types]]`.
    #[arg(long)]
    pub types: Option<PathBuf>,
}

#[derive(Args)]
pub struct ShowArgs {
    /// Fleet file.
    pub fleet: PathBuf,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// TOML file with extra `[[instance_types]]`.
    #[arg(long)]
    pub types: Option<PathBuf>,
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn write_out(output: Option<&PathBuf>, text: &str) -> Result<()> {
    match output {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// The built-in instance table, extended by `--types` when given.
pub fn catalog(types: Option<&PathBuf>) -> Result<InstanceCatalog> {
    let mut c = InstanceCatalog::builtin();
    if let Some(p) = types {
        let text = read(p)?;
        fleet::file::extend_catalog(&p.display().to_string(), &text, &mut c)?;
    }
    Ok(c)
}

/// Loads a fleet file.
pub fn load_fleet(path: &Path, catalog: InstanceCatalog) -> Result<Fleet> {
    let text = read(path)?;
    Ok(fleet::file::parse(
        &path.display().to_string(),
        &text,
        catalog,
    )?)
}

/// Runs a fleet command; `settings` resolves the connection of those that talk to a server.
pub fn run(
    cmd: FleetCommand,
    settings: impl FnOnce() -> Result<crate::config::Settings>,
) -> Result<()> {
    match cmd {
        FleetCommand::Apply(a) => crate::fleet_apply::apply(&settings()?, &a),
        FleetCommand::Current(a) => crate::fleet_apply::current(&settings()?, &a),
        FleetCommand::Allow(a) => crate::fleet_apply::allow(&settings()?, &a),
        FleetCommand::Registrations(a) => crate::fleet_apply::registrations(&settings()?, &a),
        FleetCommand::Approve(a) => crate::fleet_apply::approve(&settings()?, &a),
        FleetCommand::Reject(a) => crate::fleet_apply::reject(&settings()?, &a),
        FleetCommand::Gen(a) => {
            let cat = InstanceCatalog::builtin();
            let f = generate(&a.spec()?, &cat).context("generating the fleet")?;
            write_out(a.output.as_ref(), &fleet::file::write(&f, &cat))?;
            if a.output.is_some() {
                let s = f.summary();
                eprintln!(
                    "wrote {} nodes, {} GPUs in {} NVLink domains, {} CPU hosts",
                    s.nodes,
                    s.gpus,
                    s.nvlink_domains,
                    s.nodes - f.nodes().iter().filter(|n| n.capacity.gpus > 0).count() as u64
                );
            }
            Ok(())
        }
        FleetCommand::Import(a) => {
            let cat = catalog(a.types.as_ref())?;
            let f = match a.format {
                ImportFormat::AwsTopology => {
                    let pages = a
                        .files
                        .iter()
                        .map(|p| Ok((p.display().to_string(), read(p)?)))
                        .collect::<Result<Vec<_>>>()?;
                    let opts = fleet::aws::AwsImport {
                        pricing: a.pricing.map_or(PricingKind::OnDemand, Into::into),
                    };
                    fleet::aws::import(&pages, &cat, &opts)?
                }
                ImportFormat::SlurmTopology => {
                    if a.files.len() != 1 {
                        bail!("slurm-topology takes exactly one topology.conf");
                    }
                    let opts = SlurmImport {
                        instance_type: a.instance_type.clone(),
                        cloud: a.cloud.clone(),
                        region: a.region.clone(),
                        zone: a.zone.clone(),
                        pricing: a.pricing.map_or(PricingKind::Committed, Into::into),
                    };
                    let path = &a.files[0];
                    fleet::slurm::import(&path.display().to_string(), &read(path)?, &cat, &opts)?
                }
            };
            write_out(a.output.as_ref(), &fleet::file::write(&f, &cat))
        }
        FleetCommand::Export(a) => {
            let cat = catalog(a.types.as_ref())?;
            let f = load_fleet(&a.fleet, cat.clone())?;
            let text = match a.format {
                ExportFormat::SlurmTree => fleet::slurm::export(&f, SlurmFormat::Tree),
                ExportFormat::SlurmBlock => fleet::slurm::export(&f, SlurmFormat::Block),
                ExportFormat::Toml => fleet::file::write(&f, &cat),
            };
            write_out(a.output.as_ref(), &text)
        }
        FleetCommand::Show(a) => {
            let f = load_fleet(&a.fleet, catalog(a.types.as_ref())?)?;
            let s = f.summary();
            if a.json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                println!("nodes               {}", s.nodes);
                println!("GPUs                {}", s.gpus);
                for (m, n) in &s.gpus_by_model {
                    println!("  {m:<17} {n}");
                }
                println!("CPU millicores      {}", s.cpu_millis);
                println!("memory MiB          {}", s.memory_mib);
                println!(
                    "NVLink domains      {} ({} multi-node)",
                    s.nvlink_domains, s.multi_node_domains
                );
                println!("network levels      {}", s.network_levels);
                println!(
                    "clouds/regions/zones {}/{}/{}",
                    s.clouds, s.regions, s.zones
                );
                println!("pools               {}", s.pools);
                println!("not ready           {}", s.unschedulable_nodes);
            }
            Ok(())
        }
    }
}
