//! The provider factory: the providers a validated config asks for, built the same way by
//! `stacyvm serve` and `stacyvm worker`.

use std::sync::Arc;
use std::time::Duration;

use stacyvm_provider::{MockProvider, Provider, ProviderRegistry};

use crate::{ConfigError, ProviderChoice, ValidConfig};

#[cfg(feature = "docker")]
async fn docker_provider(
    cfg: &ValidConfig,
    cluster: Option<&str>,
) -> Result<Arc<dyn Provider>, String> {
    let mut dc = cfg.providers.docker.clone();
    dc.cluster = cluster.map(str::to_string);
    // `processes.agent` names the agent for every provider that runs one; the docker
    // section's own key wins when both are set.
    if dc.agent_path.is_empty() {
        dc.agent_path = cfg.process_agent().unwrap_or_default().to_string();
    }
    // Not a `providers.docker` key: the preview route's domain is the server's.
    dc.preview_domain = match cfg.server.preview_domain.as_str() {
        "" => "localhost".into(),
        d => d.to_string(),
    };
    let p = stacyvm_provider::DockerProvider::connect(dc)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(p))
}

#[cfg(not(feature = "docker"))]
async fn docker_provider(
    _cfg: &ValidConfig,
    _cluster: Option<&str>,
) -> Result<Arc<dyn Provider>, String> {
    Err("this build does not include the docker provider".into())
}

#[cfg(feature = "microvm")]
fn microvm_provider(cfg: &ValidConfig, cluster: Option<&str>) -> Result<Arc<dyn Provider>, String> {
    let mut mc = cfg.providers.microvm.clone();
    mc.cluster = cluster.map(str::to_string);
    mc.image_store = Some(cfg.images.root_dir());
    // `validate()` lets an empty qemu_path through while microvm is not enabled; `auto` may
    // still pick it, with the default binary.
    if mc.qemu_path.is_empty() {
        mc.qemu_path = stacyvm_provider::MicrovmConfig::default().qemu_path;
    }
    let p = stacyvm_provider::MicrovmProvider::new(mc).map_err(|e| e.to_string())?;
    Ok(Arc::new(p))
}

#[cfg(not(feature = "microvm"))]
fn microvm_provider(
    _cfg: &ValidConfig,
    _cluster: Option<&str>,
) -> Result<Arc<dyn Provider>, String> {
    Err("this build does not include the microvm provider".into())
}

#[cfg(feature = "bwrap")]
fn bwrap_provider(cfg: &ValidConfig, cluster: Option<&str>) -> Result<Arc<dyn Provider>, String> {
    let mut bc = cfg.providers.bwrap.clone();
    bc.cluster = cluster.map(str::to_string);
    // The writable layer's quota (docs/bwrap.md); validate() kept it within limits.max_disk_mb.
    bc.default_disk_mb = cfg.defaults.disk_size_mb;
    let dir = bwrap_images_dir(cfg);
    bc.images_dir = dir.to_string_lossy().into_owned();
    if bc.agent_path.is_empty() {
        bc.agent_path = cfg.process_agent().unwrap_or_default().to_string();
    }
    // With the registries' settings and logins: a spawn pulls an image the store lacks.
    let store = cfg.images.open_store(dir).map_err(|e| e.to_string())?;
    let p = stacyvm_provider::BwrapProvider::new(bc)
        .map_err(|e| e.to_string())?
        .with_image_store(store);
    Ok(Arc::new(p))
}

#[cfg(not(feature = "bwrap"))]
fn bwrap_provider(_cfg: &ValidConfig, _cluster: Option<&str>) -> Result<Arc<dyn Provider>, String> {
    Err("this build does not include the bwrap provider".into())
}

/// The store bwrap spawns from: its section's `images_dir`, else `images.root` (one store for
/// `stacyvm image`, microvm and bwrap).
fn bwrap_images_dir(cfg: &ValidConfig) -> std::path::PathBuf {
    match cfg.providers.bwrap.images_dir.as_str() {
        "" => cfg.images.root_dir(),
        d => d.into(),
    }
}

/// Whether the image store has `defaults.image`: `auto` takes bwrap only when a spawn with the
/// defaults would find its root filesystem.
async fn store_has_default_image(cfg: &ValidConfig) -> bool {
    let Ok(r) = stacyvm_image::ImageRef::parse(&cfg.defaults.image) else {
        return false;
    };
    let Ok(store) = stacyvm_image::ImageStore::open(bwrap_images_dir(cfg)) else {
        return false;
    };
    let want = r.to_string();
    store
        .list()
        .await
        .is_ok_and(|l| l.iter().any(|i| i.names.contains(&want)))
}

/// Whether hardware virtualisation is usable (a stock guest kernel runs under KVM only with
/// VT-x/AMD-V; the PVM-only /dev/kvm of some hosts does not count).
fn hardware_kvm() -> bool {
    std::path::Path::new("/dev/kvm").exists()
        && ["/sys/module/kvm_intel", "/sys/module/kvm_amd"]
            .iter()
            .any(|p| std::path::Path::new(p).exists())
}

/// Registers the provider `built` as `name` when it answers its health check (within `wait`,
/// if given), or even when it does not if it is `wanted` by name: `/ready` then reports it
/// until it answers. Returns whether it is healthy. A wanted provider that could not be built
/// fails the start; one `auto` only tried is skipped.
async fn offer(
    reg: &mut ProviderRegistry,
    name: &'static str,
    wanted: bool,
    built: Result<Arc<dyn Provider>, String>,
    wait: Option<Duration>,
    unhealthy: &str,
) -> Result<bool, ConfigError> {
    let p = match built {
        Ok(p) => p,
        Err(message) if wanted => return Err(ConfigError::ProviderUnavailable { name, message }),
        Err(e) => {
            tracing::info!(reason = %e, "auto: {name} not available");
            return Ok(false);
        }
    };
    let healthy = match wait {
        Some(wait) => tokio::time::timeout(wait, p.health())
            .await
            .is_ok_and(|r| r.is_ok()),
        None => p.health().await.is_ok(),
    };
    if healthy || wanted {
        reg.register(p);
    }
    if !healthy {
        tracing::warn!("{unhealthy}");
    }
    Ok(healthy)
}

/// Registers the providers the config asks for and resolves `auto`: docker when its daemon
/// answers, else microvm with hardware KVM, else bwrap when it works here and the image store
/// has `defaults.image`, else mock with a loud warning (commands then run unisolated).
///
/// `cluster` is the installation's cluster id (the control plane's store has it; a worker has
/// none): the providers label what they make with it and list only what carries it or no
/// cluster label at all (docs/architecture.md, "Cluster identity").
pub async fn build_providers(
    cfg: &ValidConfig,
    cluster: Option<&str>,
) -> Result<ProviderRegistry, ConfigError> {
    let mut reg = ProviderRegistry::new();
    let choice = cfg.provider_default();
    let want_docker = cfg.wants_provider(ProviderChoice::Docker);
    let mut docker_ok = false;
    if want_docker || choice == ProviderChoice::Auto {
        let built = docker_provider(cfg, cluster).await;
        let wait = Some(Duration::from_secs(5));
        let down = "docker provider: daemon not answering";
        docker_ok = offer(&mut reg, "docker", want_docker, built, wait, down).await?;
    }
    let want_microvm = cfg.wants_provider(ProviderChoice::Microvm);
    let mut microvm_ok = false;
    // `auto` takes microvm only with hardware virtualisation; TCG is no isolation boundary.
    if want_microvm || (choice == ProviderChoice::Auto && !docker_ok && hardware_kvm()) {
        let built = microvm_provider(cfg, cluster);
        let down = "microvm provider: assets missing (run scripts/setup-microvm.sh)";
        microvm_ok = offer(&mut reg, "microvm", want_microvm, built, None, down).await?;
    }
    let want_bwrap = cfg.wants_provider(ProviderChoice::Bwrap);
    let mut bwrap_ok = false;
    // `auto` takes bwrap (isolation without a daemon) when no docker or KVM answered and the
    // store can serve the default image.
    let auto_bwrap = choice == ProviderChoice::Auto && !docker_ok && !microvm_ok;
    if want_bwrap || (auto_bwrap && store_has_default_image(cfg).await) {
        let built = bwrap_provider(cfg, cluster);
        let down = "bwrap provider: not usable here (see /ready)";
        bwrap_ok = offer(&mut reg, "bwrap", want_bwrap, built, None, down).await?;
    }
    let auto_mock = choice == ProviderChoice::Auto && !docker_ok && !microvm_ok && !bwrap_ok;
    if cfg.wants_provider(ProviderChoice::Mock) || auto_mock {
        let mock = match cfg.process_agent() {
            Some(agent) => MockProvider::new().with_agent(agent),
            None => MockProvider::new(),
        };
        reg.register(Arc::new(mock) as Arc<dyn Provider>);
    }
    let default = match choice {
        ProviderChoice::Auto if docker_ok => {
            tracing::info!("providers.default is auto: using docker");
            "docker"
        }
        ProviderChoice::Auto if microvm_ok => {
            tracing::info!("providers.default is auto: using microvm (KVM)");
            "microvm"
        }
        ProviderChoice::Auto if bwrap_ok => {
            tracing::info!("providers.default is auto: using bwrap (no docker or KVM here)");
            "bwrap"
        }
        ProviderChoice::Auto => {
            tracing::warn!(
                "providers.default is auto and no isolating provider is available: using the mock \
                 provider. COMMANDS RUN UNISOLATED ON THIS HOST. Do not expose this server."
            );
            "mock"
        }
        ProviderChoice::Mock => "mock",
        ProviderChoice::Docker => "docker",
        ProviderChoice::Microvm => "microvm",
        ProviderChoice::Bwrap => "bwrap",
    };
    if !reg.set_default(default) {
        tracing::warn!(provider = default, "default provider is not registered");
    }
    Ok(reg)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::Config;

    fn valid(yaml: &str) -> ValidConfig {
        Config::from_yaml_str(yaml).unwrap().validate().unwrap()
    }

    #[tokio::test]
    async fn mock_default_registers_only_the_mock() {
        let reg = build_providers(&valid("providers:\n  default: mock\n"), None)
            .await
            .unwrap();
        assert_eq!(reg.names(), ["mock"]);
        assert_eq!(reg.default_name(), Some("mock"));
    }

    /// A backend the config asks for by name must exist: a build without it fails the start
    /// naming the provider, rather than falling back to something unisolated.
    #[cfg(not(feature = "docker"))]
    #[tokio::test]
    async fn explicit_backend_missing_from_the_build_is_an_error() {
        let err = build_providers(&valid("providers:\n  docker:\n    enabled: true\n"), None)
            .await
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            "provider docker: this build does not include the docker provider"
        );
    }

    #[test]
    fn bwrap_network_mode_is_checked() {
        let bad = Config::from_yaml_str("providers:\n  bwrap:\n    network_mode: bridge\n")
            .unwrap()
            .validate()
            .err()
            .unwrap()
            .to_string();
        assert!(bad.contains("providers.bwrap.network_mode"), "{bad}");
        let ok = valid("providers:\n  default: bwrap\n  bwrap:\n    network_mode: user\n");
        assert_eq!(ok.provider_default(), ProviderChoice::Bwrap);
        assert!(ok.wants_provider(ProviderChoice::Bwrap));
    }

    /// An empty store cannot serve `defaults.image`, so `auto` never picks bwrap over it.
    #[tokio::test]
    async fn auto_asks_the_store_for_the_default_image() {
        let t = tempfile::tempdir().unwrap();
        let yaml = format!("images:\n  root: {}\n", t.path().display());
        assert!(!store_has_default_image(&valid(&yaml)).await);
    }

    /// With bwrap asked for by name, a machine where it cannot work still registers it (its
    /// health says why) and never falls back to the mock.
    #[cfg(feature = "bwrap")]
    #[tokio::test]
    async fn bwrap_by_name_is_registered_and_is_the_default() {
        let t = tempfile::tempdir().unwrap();
        let yaml = format!(
            "providers:\n  default: bwrap\n  bwrap:\n    data_dir: {}\n    images_dir: {}\n",
            t.path().join("data").display(),
            t.path().join("images").display()
        );
        let reg = build_providers(&valid(&yaml), None).await.unwrap();
        assert_eq!(reg.names(), ["bwrap"]);
        assert_eq!(reg.default_name(), Some("bwrap"));
    }
}
