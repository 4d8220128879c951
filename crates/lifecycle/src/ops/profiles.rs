//! `profiles`: the profiles a create may name, with their defaults and TTL policy.

use crate::model::ProfileInfo;

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
                resources: (&p.resources).into(),
                max_resources: (&p.max_resources).into(),
                ttl_default: p.ttl.default,
                ttl_max: p.ttl.max,
                ttl_idle: p.ttl.idle,
                idle_action: p.ttl.idle_action,
                pause_stops_clock: p.ttl.pause_stops_clock,
                auto_resume: p.auto_resume,
            })
            .collect()
    }
}
