//! The link between the daemon and the embedded BGP speaker.
//!
//! The daemon publishes what should be announced ([`Announcements`]: each VIP address up or
//! down, and whether it is shutting down) and whether the dataplane forwards
//! ([`DataplaneHealth`]). [`desired_routes`] turns the two into the set of host routes to
//! announce (a pure function, tested below); [`start`] parses `[bgp]`, spawns the speaker and a
//! task that keeps the speaker's routes equal to that set, and installs the speaker as the
//! daemon's [`BgpAdmin`] (`bgp.summary`, `bgp.routes`, graceful shutdown on SIGTERM).

use std::collections::BTreeMap;
use std::net::IpAddr;

use bgp::speaker::{Speaker, SpeakerHandle};
use bgp::{BgpConfig, RoutePolicy};
use serde::Deserialize;
use serde_json::Value;

use crate::admin::BoxFuture;
use crate::daemon::{Announcements, BgpAdmin, Daemon, DataplaneHealth};

/// Parses the raw `[bgp]` table into the speaker's config.
pub fn parse(raw: &toml::Value) -> Result<BgpConfig, Vec<String>> {
    let config = BgpConfig::deserialize(raw.clone()).map_err(|e| vec![e.to_string()])?;
    let problems = config.validate();
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(problems.iter().map(ToString::to_string).collect())
    }
}

/// The `[bgp]` validator for `vipd --check` and reload (a [`crate::config::BgpCheck`]).
pub fn check(raw: &toml::Value) -> Vec<String> {
    parse(raw).err().unwrap_or_default()
}

/// Parses a VIP's raw `[vip.bgp]` policy table.
pub fn policy(raw: Option<&toml::Value>) -> Result<RoutePolicy, String> {
    match raw {
        None => Ok(RoutePolicy::default()),
        Some(raw) => RoutePolicy::deserialize(raw.clone()).map_err(|e| e.to_string()),
    }
}

/// The `[vip.bgp]` validator (a [`crate::config::BgpCheck`] `vip_policy`).
pub fn check_policy(raw: &toml::Value) -> Vec<String> {
    policy(Some(raw)).err().into_iter().collect()
}

/// The host routes to announce: the up VIPs with their policies, or none at all while the
/// dataplane does not forward (announcing would blackhole the traffic ECMP sends here) or
/// while shutting down (the speaker's graceful shutdown withdraws what is announced).
pub fn desired_routes(
    announcements: &Announcements,
    dataplane: &DataplaneHealth,
) -> BTreeMap<IpAddr, RoutePolicy> {
    if !dataplane.healthy {
        return BTreeMap::new();
    }
    announcements
        .vips
        .iter()
        .filter(|(_, vip)| vip.up)
        .map(|(address, vip)| {
            let policy = policy(vip.policy.as_ref()).unwrap_or_else(|e| {
                // Unreachable with vipd's config hook (`check_policy` refuses such a file on
                // load and reload); announce plainly rather than not at all.
                tracing::error!(vip = %address, error = %e, "invalid [vip.bgp]; default policy");
                RoutePolicy::default()
            });
            (*address, policy)
        })
        .collect()
}

/// Spawns the speaker when the running config has `[bgp]`; must run inside the tokio runtime.
/// Returns `Ok(None)` without `[bgp]`.
pub fn start(daemon: &Daemon) -> Result<Option<SpeakerHandle>, String> {
    let config = daemon.config();
    let Some(raw) = config.bgp() else {
        return Ok(None);
    };
    let bgp_config = parse(raw).map_err(|p| format!("invalid [bgp]: {}", p.join("; ")))?;
    let speaker = Speaker::spawn(bgp_config).map_err(|e| e.to_string())?;
    daemon.set_bgp(Box::new(Admin(speaker.clone())));
    tokio::spawn(follow(
        speaker.clone(),
        daemon.announcements(),
        daemon.dataplane_health(),
    ));
    Ok(Some(speaker))
}

/// Keeps the speaker's routes equal to [`desired_routes`] until the daemon shuts down.
async fn follow(
    speaker: SpeakerHandle,
    mut announcements: tokio::sync::watch::Receiver<Announcements>,
    mut dataplane: tokio::sync::watch::Receiver<DataplaneHealth>,
) {
    let mut announced: BTreeMap<IpAddr, RoutePolicy> = BTreeMap::new();
    loop {
        let (wanted, shutting_down) = {
            let a = announcements.borrow_and_update();
            let d = dataplane.borrow_and_update();
            if !d.healthy && !announced.is_empty() {
                tracing::warn!(
                    reason = d.reason.as_deref().unwrap_or("unknown"),
                    "dataplane unhealthy: withdrawing every VIP"
                );
            }
            (desired_routes(&a, &d), a.shutting_down)
        };
        if shutting_down {
            // The daemon calls `BgpAdmin::shutdown` (graceful, RFC 8326) next.
            return;
        }
        for address in announced.keys() {
            if !wanted.contains_key(address) {
                tracing::info!(vip = %address, "BGP: withdraw");
                speaker.withdraw(*address);
            }
        }
        for (address, policy) in &wanted {
            if announced.get(address) != Some(policy) {
                tracing::info!(vip = %address, "BGP: announce");
                speaker.announce(*address, policy.clone());
            }
        }
        announced = wanted;
        tokio::select! {
            changed = announcements.changed() => if changed.is_err() { return },
            changed = dataplane.changed() => if changed.is_err() { return },
        }
    }
}

/// The speaker as the admin socket sees it.
struct Admin(SpeakerHandle);

impl BgpAdmin for Admin {
    fn summary(&self) -> BoxFuture<'_, Value> {
        Box::pin(async move { serde_json::to_value(self.0.summary().await).unwrap_or(Value::Null) })
    }

    fn routes(&self) -> BoxFuture<'_, Value> {
        Box::pin(async move { serde_json::to_value(self.0.routes().await).unwrap_or(Value::Null) })
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.0.graceful_shutdown().await })
    }

    fn reconfigure(&self, bgp: Option<&toml::Value>) -> Result<Vec<String>, String> {
        let Some(raw) = bgp else {
            return Err("removing [bgp] needs a restart".into());
        };
        let config = parse(raw).map_err(|p| format!("invalid [bgp]: {}", p.join("; ")))?;
        let done = self.0.reconfigure(config).map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let mut say = |what: &str, peers: &[std::net::IpAddr]| {
            out.extend(peers.iter().map(|p| format!("peer {p} {what}")));
        };
        say("added", &done.peers_added);
        say("removed", &done.peers_removed);
        say("reset (session settings changed)", &done.peers_reset);
        say(
            "re-announced (route attributes changed)",
            &done.peers_reannounced,
        );
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::VipAnnouncement;

    fn table(text: &str) -> toml::Value {
        toml::from_str(text).unwrap()
    }

    fn announcements(vips: &[(&str, bool, Option<&str>)]) -> Announcements {
        Announcements {
            vips: vips
                .iter()
                .map(|(a, up, policy)| {
                    (
                        a.parse().unwrap(),
                        VipAnnouncement {
                            up: *up,
                            policy: policy.map(table),
                        },
                    )
                })
                .collect(),
            shutting_down: false,
        }
    }

    #[test]
    fn only_up_vips_are_announced_with_their_policy() {
        let a = announcements(&[
            (
                "192.0.2.1",
                true,
                Some("med = 50\ncommunities = [\"65000:7\"]"),
            ),
            ("192.0.2.2", false, None),
            ("2001:db8::1", true, None),
        ]);
        let routes = desired_routes(&a, &DataplaneHealth::default());
        let keys: Vec<String> = routes.keys().map(ToString::to_string).collect();
        assert_eq!(keys, ["192.0.2.1", "2001:db8::1"]);
        let p = &routes[&"192.0.2.1".parse::<IpAddr>().unwrap()];
        assert_eq!(p.med, Some(50));
        assert_eq!(p.communities.len(), 1);
        assert_eq!(
            routes[&"2001:db8::1".parse::<IpAddr>().unwrap()],
            RoutePolicy::default()
        );
    }

    #[test]
    fn an_unhealthy_dataplane_withdraws_everything() {
        let a = announcements(&[("192.0.2.1", true, None)]);
        let down = DataplaneHealth {
            healthy: false,
            reason: Some("lcore 1 stalled".into()),
        };
        assert!(desired_routes(&a, &down).is_empty());
    }

    #[test]
    fn bgp_section_errors_are_reported() {
        let ok = check(&table(
            "local_as = 65001\nrouter_id = \"10.0.0.1\"\n[[peer]]\naddress = \"10.0.0.2\"\nremote_as = 65000\nfamilies = [\"ipv4\"]",
        ));
        assert!(ok.is_empty(), "{ok:?}");
        let missing = check(&table("local_as = 65001"));
        assert!(
            missing.iter().any(|m| m.contains("router_id")),
            "{missing:?}"
        );
        let unknown = check(&table(
            "local_as = 65001\nrouter_id = \"10.0.0.1\"\nholdtime = 3",
        ));
        assert!(
            unknown.iter().any(|m| m.contains("holdtime")),
            "{unknown:?}"
        );
        let reserved = check(&table("local_as = 0\nrouter_id = \"10.0.0.1\""));
        assert!(
            reserved.iter().any(|m| m.contains("local_as")),
            "{reserved:?}"
        );
    }

    #[test]
    fn vip_policy_errors_are_reported() {
        assert!(policy(Some(&table("med = 10"))).is_ok());
        let err = policy(Some(&table("communities = [\"not-a-community\"]"))).unwrap_err();
        assert!(err.contains("community"), "{err}");
        assert!(policy(Some(&table("colour = 1"))).is_err());
    }
}
