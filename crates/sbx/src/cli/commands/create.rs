//! `sbx create`: prints the new sandbox's id alone, for scripts (`id=$(sbx create)`).

use clap::Args;
use sbx_protocol::{CreateSandboxRequest, ResourcesRequest};

use super::key_value;
use crate::cli::output::{self, say_err};
use crate::cli::Context;

#[derive(Debug, Args, Clone)]
pub struct CreateArgs {
    /// Profile to create from.
    #[arg(long, short = 'p')]
    pub profile: Option<String>,
    /// Lifetime (e.g. 30m, 4h, 1d, 1h30m, or seconds) [default: the profile's].
    #[arg(long, value_parser = crate::cli::duration_value)]
    pub ttl: Option<sbx_protocol::DurationValue>,
    /// Root filesystem template.
    #[arg(long, short = 't')]
    pub template: Option<String>,
    /// A name, unique among live sandboxes; usable in place of the id.
    #[arg(long)]
    pub name: Option<String>,
    /// Environment variable for every process (repeatable).
    #[arg(long = "env", short = 'e', value_name = "KEY=VALUE", value_parser = key_value)]
    pub env: Vec<(String, String)>,
    /// Memory limit in MiB.
    #[arg(long, value_name = "MIB")]
    pub memory: Option<u64>,
    /// CPU quota (e.g. 0.5).
    #[arg(long)]
    pub cpus: Option<f64>,
    /// Maximum number of processes.
    #[arg(long)]
    pub pids: Option<u64>,
    /// Disk the sandbox may fill, in MiB.
    #[arg(long, value_name = "MIB")]
    pub disk: Option<u64>,
    /// Start from this snapshot's files (its template; the profile's backend must store it).
    #[arg(long, value_name = "SNAPSHOT")]
    pub from_snapshot: Option<String>,
    /// Fork this hibernated sandbox: the new one carries on its processes and memory (its
    /// profile, template and resources; gVisor).
    #[arg(long, value_name = "SANDBOX")]
    pub fork_of: Option<String>,
    /// A port anyone may reach through the daemon without a key (repeatable).
    #[arg(long = "public-port", value_name = "PORT")]
    pub public_ports: Vec<u16>,
    /// Metadata label (repeatable).
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE", value_parser = key_value)]
    pub labels: Vec<(String, String)>,
}

impl CreateArgs {
    pub fn request(&self) -> CreateSandboxRequest {
        let any = self.memory.is_some()
            || self.cpus.is_some()
            || self.pids.is_some()
            || self.disk.is_some();
        let resources = any.then_some(ResourcesRequest {
            memory_mb: self.memory,
            cpus: self.cpus,
            pids: self.pids,
            disk_mb: self.disk,
        });
        CreateSandboxRequest {
            profile: self.profile.clone(),
            ttl: self.ttl.clone(),
            template: self.template.clone(),
            name: self.name.clone(),
            env: self.env.iter().cloned().collect(),
            resources,
            metadata: self.labels.iter().cloned().collect(),
            from_snapshot: self.from_snapshot.clone(),
            fork_of: self.fork_of.clone(),
            public_ports: self.public_ports.clone(),
        }
    }
}

pub async fn run(context: &Context, args: CreateArgs) -> anyhow::Result<u8> {
    let sandbox = context.client.create(&args.request()).await?;
    for warning in &sandbox.warnings {
        say_err!("sbx: warning: {warning}");
    }
    if context.json {
        output::print_json(&sandbox);
    } else {
        println!("{}", sandbox.id);
    }
    Ok(0)
}
