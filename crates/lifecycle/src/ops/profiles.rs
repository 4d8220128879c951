//! `profiles`: the profiles a create may name, with their defaults and TTL policy.

use sbx_config::duration::format;
use sbx_protocol::{ProfileInfo, Resources};

use crate::Service;

impl Service {
    pub fn profiles(&self) -> Vec<ProfileInfo> {
        self.inner
            .config
            .profiles
            .values()
            .map(|p| ProfileInfo {
                name: p.name.clone(),
                backend: p.backend.clone(),
                template: p.template.clone(),
                network: "none".into(),
                resources: resources(&p.resources),
                max_resources: resources(&p.max_resources),
                ttl_default: format(p.ttl.default),
                ttl_max: format(p.ttl.max),
                ttl_idle: p.ttl.idle.map(format),
            })
            .collect()
    }
}

fn resources(r: &sbx_config::Resources) -> Resources {
    Resources {
        memory_mb: r.memory_mb,
        cpus: r.cpus,
        pids: r.pids,
        disk_mb: r.disk_mb,
    }
}
