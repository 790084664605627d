//! The cluster deployment files stay in step with `HubSettings`: `deploy/cluster/hub.toml` and
//! the Kubernetes ConfigMap's `hub.toml` load with `HubSettings::load`, together with every
//! `OMNIHUB_HUB_*` variable that `deploy/cluster/compose.yaml` and the manifests in
//! `deploy/k8s/` set (settings refuse unknown keys). A renamed or misspelt key fails here
//! instead of at a node's start-up.
// figment's `Jail` closure returns figment's own (large) error type; that is its API, not ours.
#![allow(clippy::result_large_err)]

use hub::config::{HubSettings, StorageKind};
use secrecy::ExposeSecret;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// What a variable is set to in the test when its value comes from outside the file (a secret
/// file, the downward API): every such setting is a string.
const FROM_OUTSIDE: &str = "set-from-outside";

/// The pod IP the tests put in for `$(POD_IP)`.
const POD_IP: &str = "10.1.2.3";

fn deploy_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

fn read(path: &str) -> String {
    let file = deploy_file(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The `OMNIHUB_HUB_*` variables a compose file or manifest sets, in file order, with their
/// values where the file states them: `NAME: value` (compose's environment map, a Secret's
/// stringData) or `- name: NAME` followed by `value: …` (a container's env). `None` where the
/// value comes from elsewhere (a secret's file, `valueFrom`). Comments are skipped.
fn variables(text: &str) -> Vec<(String, Option<String>)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let item = line.trim_start();
        if item.starts_with('#') {
            continue;
        }
        let item = item.strip_prefix("- ").unwrap_or(item);
        if let Some(rest) = item.strip_prefix("name: ") {
            let Some(name) = variable_name(rest) else {
                continue;
            };
            let value = lines
                .get(i + 1)
                .and_then(|next| next.trim_start().strip_prefix("value:"))
                .map(unquote);
            found.push((name, value));
        } else if let Some(name) = variable_name(item) {
            let value = item[name.len()..]
                .strip_prefix(':')
                .map(unquote)
                .filter(|v| !v.is_empty());
            found.push((name, value));
        }
    }
    found
}

/// `OMNIHUB_HUB_…` at the start of `text`, up to the first character a variable name cannot
/// hold.
fn variable_name(text: &str) -> Option<String> {
    if !text.starts_with("OMNIHUB_HUB_") {
        return None;
    }
    let end = text
        .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .unwrap_or(text.len());
    Some(text[..end].to_string())
}

fn unquote(value: &str) -> String {
    let v = value.trim();
    let quoted = v.len() >= 2
        && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')));
    if quoted {
        v[1..v.len() - 1].to_string()
    } else {
        v.to_string()
    }
}

/// The text of a YAML literal block `key: |` (indented lines after it, de-indented).
fn literal_block(text: &str, key: &str) -> Option<String> {
    let indent_of = |l: &str| l.len() - l.trim_start().len();
    let mut lines = text.lines();
    let header = format!("{key}: |");
    let outer = indent_of(lines.by_ref().find(|l| l.trim() == header)?);
    let body: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || indent_of(l) > outer)
        .collect();
    let indent = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| indent_of(l))
        .min()?;
    Some(
        body.iter()
            .map(|l| l.get(indent..).unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// Loads `toml` with `vars` set, as a node would start.
fn load(toml: &str, vars: &[(String, String)]) -> Result<HubSettings, String> {
    let mut loaded = Err("not run".to_string());
    figment::Jail::expect_with(|jail| {
        jail.clear_env();
        jail.create_file("hub.toml", toml)?;
        for (name, value) in vars {
            jail.set_env(name, value);
        }
        loaded = HubSettings::load(Some(Path::new("hub.toml"))).map_err(|e| e.to_string());
        Ok(())
    });
    loaded
}

fn host_ip(address: &str) -> Option<IpAddr> {
    let url = url::Url::parse(address).ok()?;
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

#[test]
fn every_compose_node_starts_from_the_cluster_settings() {
    let toml = read("cluster/hub.toml");
    let found = variables(&read("cluster/compose.yaml"));
    // Per node: the values in file order (hub-1, hub-2, hub-3); shared: one value or none.
    let mut by_name: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
    for (name, value) in found {
        by_name.entry(name).or_default().push(value);
    }
    for expected in [
        "OMNIHUB_HUB_CLUSTER__NODE_ID",
        "OMNIHUB_HUB_CLUSTER__ADVERTISED_ADDRESS",
        "OMNIHUB_HUB_CLUSTER__POSTGRES_URL",
        "OMNIHUB_HUB_CLUSTER__NATS_URL",
        "OMNIHUB_HUB_CLUSTER__SECRET",
        "OMNIHUB_HUB_ADMIN_TOKEN",
        "OMNIHUB_HUB_OPS_TOKEN",
    ] {
        assert!(
            by_name.contains_key(expected),
            "compose.yaml sets {expected}"
        );
    }
    let node_ids = by_name["OMNIHUB_HUB_CLUSTER__NODE_ID"].clone();
    assert_eq!(node_ids.len(), 3, "three hub nodes");

    let mut seen = Vec::new();
    for node in 0..node_ids.len() {
        let vars: Vec<(String, String)> = by_name
            .iter()
            .map(|(name, values)| {
                let value = values.get(node).unwrap_or(&values[0]);
                let value = value.clone().unwrap_or_else(|| FROM_OUTSIDE.into());
                (name.clone(), value)
            })
            .collect();
        let s = load(&toml, &vars).unwrap_or_else(|e| panic!("node {}: {e}", node + 1));
        assert_eq!(s.storage, StorageKind::Cluster);
        assert_eq!(s.cluster.check(), Ok(()));
        assert_eq!(s.listen.port(), 8080);
        assert!(s.listen.ip().is_unspecified(), "reachable from the network");
        assert!(!s.demo_data, "nodes must not all seed the shared database");
        assert_eq!(
            s.cluster.postgres_url.expose_secret(),
            FROM_OUTSIDE,
            "the URL comes from the secret file, not hub.toml"
        );
        assert!(s.cluster.nats_url.is_some() && s.admin_token.is_some());
        let advertised = s.cluster.advertised_address.clone().expect("advertised");
        // Forwarded requests carry X-Forwarded-For from the other nodes: they must be trusted.
        let ip = host_ip(&advertised).expect("an IP address");
        assert!(
            s.channels.trusted_proxies.contains(&ip),
            "{advertised} is in trusted_proxies"
        );
        seen.push((s.cluster.node_id.clone(), advertised));
    }
    let ids: std::collections::BTreeSet<_> = seen.iter().map(|(id, _)| id).collect();
    let addresses: std::collections::BTreeSet<_> = seen.iter().map(|(_, a)| a).collect();
    assert_eq!((ids.len(), addresses.len()), (3, 3), "{seen:?}");
}

#[test]
fn the_kubernetes_pods_start_from_the_configmap() {
    let configmap = read("k8s/configmap.yaml");
    let toml = literal_block(&configmap, "hub.toml").expect("the ConfigMap holds hub.toml");
    let deployment = read("k8s/deployment.yaml");
    assert!(deployment.contains("name: omnihub-hub-config"));
    assert!(deployment.contains("\"/etc/omnihub/hub.toml\""));
    let mut found = variables(&deployment);
    let secret = variables(&read("k8s/secret.yaml"));
    assert!(deployment.contains("name: omnihub-hub-secrets") && secret.len() >= 4);
    found.extend(secret);
    let vars: Vec<(String, String)> = found
        .into_iter()
        .map(|(name, value)| {
            let value =
                value.map_or_else(|| FROM_OUTSIDE.into(), |v| v.replace("$(POD_IP)", POD_IP));
            (name, value)
        })
        .collect();
    let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"OMNIHUB_HUB_CLUSTER__NODE_ID"), "{names:?}");

    let s = load(&toml, &vars).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.storage, StorageKind::Cluster);
    assert_eq!(s.cluster.check(), Ok(()));
    assert_eq!(s.cluster.node_id, FROM_OUTSIDE, "node_id is the pod's name");
    assert_eq!(
        s.cluster.advertised_address.as_deref(),
        Some("http://10.1.2.3:8080")
    );
    assert_eq!(s.listen.port(), 8080);
    assert!(s.channels.secure_cookies && !s.demo_data);
    assert!(s
        .cluster
        .postgres_url
        .expose_secret()
        .contains("@omnihub-postgres:5432/"));
    assert!(s.admin_token.is_some() && s.ops_token.is_some());
}

#[test]
fn a_misspelt_key_or_variable_in_a_deploy_file_would_be_refused() {
    // The mechanism the two tests above rely on: a key or variable HubSettings does not know
    // fails to load.
    let toml = read("cluster/hub.toml");
    assert!(load(&toml, &[]).is_ok());
    let misspelt = toml.replace("heartbeat_every", "heartbeat_evry");
    assert!(load(&misspelt, &[]).is_err_and(|e| e.contains("heartbeat_evry")));
    let var = [(
        "OMNIHUB_HUB_CLUSTER__NODEID".to_string(),
        "hub-1".to_string(),
    )];
    assert!(load(&toml, &var).is_err());

    // And the scanner finds variables in both forms, values included.
    let found = variables(
        "environment:\n  OMNIHUB_HUB_LISTEN: \"0.0.0.0:1\"\n  # OMNIHUB_HUB_NOT: x\n\
         env:\n  - name: OMNIHUB_HUB_CLUSTER__NODE_ID\n    valueFrom:\n  - name: OMNIHUB_HUB_A\n    value: 'b'\n\
         secrets:\n  - OMNIHUB_HUB_OPS_TOKEN\n",
    );
    let expected: Vec<(String, Option<String>)> = vec![
        ("OMNIHUB_HUB_LISTEN".into(), Some("0.0.0.0:1".into())),
        ("OMNIHUB_HUB_CLUSTER__NODE_ID".into(), None),
        ("OMNIHUB_HUB_A".into(), Some("b".into())),
        ("OMNIHUB_HUB_OPS_TOKEN".into(), None),
    ];
    assert_eq!(found, expected);
    let block = literal_block(
        "data:\n  hub.toml: |\n    a = 1\n\n    [b]\n    c = 2\nnext: x\n",
        "hub.toml",
    );
    assert_eq!(block.as_deref(), Some("a = 1\n\n[b]\nc = 2"));
}
