//! `ImageStore`: the public face of the store. Each operation takes the store lock (shared for
//! pull, import and rootfs, which only add; exclusive for gc, which removes) and does its file
//! work on tokio's blocking pool.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::credentials::Credentials;
use crate::digest::Digest;
use crate::error::ImageError;
use crate::flatten::flatten;
use crate::fsutil::{fsync_dir, syncfs, FileLock};
use crate::gc::{self, GcReport};
use crate::layout::{Layout, StoredImage};
use crate::reference::ImageRef;
use crate::refs::{self, RefIndex};
use crate::registry::{self, RegistryOptions};
use crate::spec::RuntimeConfig;
use crate::stage::Staging;

/// A local OCI image store shared by the providers. Cheap to clone; clones share settings.
/// Several stores (or processes) may open the same root: the on-disk locks keep it consistent.
#[derive(Clone, Debug)]
pub struct ImageStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    layout: Layout,
    registry: RegistryOptions,
    /// The logins [`ImageStore::rootfs_or_pull`] pulls with.
    credentials: Credentials,
    /// One turn per name being pulled on demand, so concurrent callers share one pull.
    pulls: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// One stored image, as `stacyvm image ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    /// Every name pointing at this image, canonical (`docker.io/library/busybox:latest`).
    pub names: Vec<String>,
    pub manifest_digest: Digest,
    /// The image id in Docker's terms.
    pub config_digest: Digest,
    /// Config plus compressed layers, in bytes.
    pub size: u64,
    /// The config's `created` timestamp (RFC 3339), when it has one.
    pub created: Option<String>,
    pub layers: usize,
}

/// A flattened root filesystem and how to run the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootFs {
    /// Shared by every sandbox of the image: mount it read-only (files are hard links into the
    /// store's layers).
    pub path: PathBuf,
    pub manifest_digest: Digest,
    pub config: RuntimeConfig,
}

impl ImageStore {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ImageError> {
        let layout = Layout::new(root.into());
        layout
            .create()
            .map_err(ImageError::io("creating the image store directories"))?;
        Ok(ImageStore {
            inner: Arc::new(Inner {
                layout,
                registry: RegistryOptions::default(),
                credentials: Credentials::anonymous(),
                pulls: Mutex::default(),
            }),
        })
    }

    /// Registries (`host[:port]`) to pull from over plain HTTP, besides loopback ones, which
    /// always are.
    pub fn with_insecure_registries<I, S>(self, hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut registry = self.inner.registry.clone();
        registry.insecure = hosts.into_iter().map(Into::into).collect();
        self.with_registry(registry)
    }

    /// PEM certificates to trust for HTTPS registries instead of the system CA bundle.
    pub fn with_ca_certificates(self, pem: Vec<u8>) -> Self {
        let mut registry = self.inner.registry.clone();
        registry.ca_pem = Some(pem);
        self.with_registry(registry)
    }

    /// The registry logins [`ImageStore::rootfs_or_pull`] uses ([`ImageStore::pull`] takes
    /// its own).
    pub fn with_credentials(self, credentials: Credentials) -> Self {
        ImageStore {
            inner: Arc::new(Inner {
                layout: self.inner.layout.clone(),
                registry: self.inner.registry.clone(),
                credentials,
                pulls: Mutex::default(),
            }),
        }
    }

    fn with_registry(self, registry: RegistryOptions) -> Self {
        ImageStore {
            inner: Arc::new(Inner {
                layout: self.inner.layout.clone(),
                registry,
                credentials: self.inner.credentials.clone(),
                pulls: Mutex::default(),
            }),
        }
    }

    pub fn root(&self) -> &Path {
        self.inner.layout.root()
    }

    /// Pulls `reference` (by tag or digest) unless every blob is already here, and names it.
    /// On any error nothing of this pull stays in the store.
    pub async fn pull(
        &self,
        reference: &ImageRef,
        credentials: &Credentials,
    ) -> Result<ImageSummary, ImageError> {
        let layout = self.inner.layout.clone();
        let lock = self.lock(false).await?;
        let mut staging = Staging::new(&layout)?;
        let manifest =
            registry::fetch(&mut staging, reference, credentials, &self.inner.registry).await?;
        let name = reference.to_string();
        blocking(move || {
            let _lock = lock;
            staging.prepare(&manifest, &name)?;
            staging.commit(&[(name.clone(), manifest.clone())])?;
            summary(&layout, &refs::load(&layout)?, &manifest)
        })
        .await
    }

    /// Imports a `docker save` archive (tar or tar.gz) or an OCI layout directory. Images are
    /// named as the archive names them; `tag` adds a name (only for single-image archives) and
    /// is required when the archive names none.
    pub async fn import(
        &self,
        path: &Path,
        tag: Option<&ImageRef>,
    ) -> Result<Vec<ImageSummary>, ImageError> {
        let layout = self.inner.layout.clone();
        let lock = self.lock(false).await?;
        let (path, tag) = (path.to_path_buf(), tag.cloned());
        blocking(move || {
            let _lock = lock;
            let mut staging = Staging::new(&layout)?;
            let names = crate::import::import(&mut staging, &path, tag.as_ref())?;
            staging.commit(&names)?;
            let index = refs::load(&layout)?;
            let mut manifests: Vec<&Digest> = names.iter().map(|(_, d)| d).collect();
            manifests.dedup();
            manifests
                .into_iter()
                .map(|d| summary(&layout, &index, d))
                .collect()
        })
        .await
    }

    /// Every stored image, one entry per manifest, sorted by first name.
    pub async fn list(&self) -> Result<Vec<ImageSummary>, ImageError> {
        let layout = self.inner.layout.clone();
        // Shared, so a gc running after a concurrent remove cannot pull blobs from under it.
        let lock = self.lock(false).await?;
        blocking(move || {
            let _lock = lock;
            let index = refs::load(&layout)?;
            let manifests: BTreeMap<&Digest, ()> =
                index.refs.values().map(|e| (&e.manifest, ())).collect();
            let mut out = manifests
                .keys()
                .map(|d| summary(&layout, &index, d))
                .collect::<Result<Vec<_>, _>>()?;
            out.sort_by(|a, b| a.names.cmp(&b.names));
            Ok(out)
        })
        .await
    }

    /// Removes the name `reference` (a digest reference removes every name of that image).
    /// The data stays until `gc`.
    pub async fn remove(&self, reference: &ImageRef) -> Result<(), ImageError> {
        let layout = self.inner.layout.clone();
        let r = reference.clone();
        blocking(move || {
            refs::update(&layout, |index| {
                if index.refs.remove(&r.to_string()).is_some() {
                    return Ok(());
                }
                let Some(d) = r.digest().filter(|_| r.tag().is_none()) else {
                    return Err(ImageError::not_found(format!("image {r}")));
                };
                let before = index.refs.len();
                index.refs.retain(|_, e| &e.manifest != d);
                if index.refs.len() == before {
                    return Err(ImageError::not_found(format!("image {r}")));
                }
                Ok(())
            })
        })
        .await
    }

    /// Deletes blobs, layers and root filesystems no name reaches, and crash leftovers. Waits
    /// for running pulls, imports and rootfs builds to finish first.
    pub async fn gc(&self) -> Result<GcReport, ImageError> {
        let layout = self.inner.layout.clone();
        let lock = self.lock(true).await?;
        blocking(move || {
            let _lock = lock;
            gc::collect(&layout)
        })
        .await
    }

    /// The image's flattened root filesystem (built on first use, then shared) and its runtime
    /// config.
    pub async fn rootfs(&self, reference: &ImageRef) -> Result<RootFs, ImageError> {
        let layout = self.inner.layout.clone();
        let lock = self.lock(false).await?;
        let r = reference.clone();
        blocking(move || {
            let _lock = lock;
            let manifest = resolve(&refs::load(&layout)?, &r)?;
            let image = StoredImage::load(&layout, &manifest)?;
            let path = layout.rootfs(&manifest);
            if !path.is_dir() {
                build_rootfs(&layout, &image, &path, &r)?;
            }
            Ok(RootFs {
                path,
                manifest_digest: manifest,
                config: image.config.config.unwrap_or_default(),
            })
        })
        .await
    }

    /// Like [`ImageStore::rootfs`], but an image the store does not have is pulled first, with
    /// the store's credentials ([`ImageStore::with_credentials`]). Concurrent calls for one name
    /// (through this store or its clones) share a single pull: the first caller pulls, the
    /// others wait for it and then find the image. A failed pull leaves nothing behind, as
    /// [`ImageStore::pull`] does, and the next call tries again.
    pub async fn rootfs_or_pull(&self, reference: &ImageRef) -> Result<RootFs, ImageError> {
        match self.rootfs(reference).await {
            Err(ImageError::NotFound { .. }) => {}
            done => return done,
        }
        let name = reference.to_string();
        let turn = {
            let mut pulls = self.inner.pulls.lock().unwrap_or_else(|p| p.into_inner());
            pulls.entry(name.clone()).or_default().clone()
        };
        let result = {
            let _turn = turn.lock().await;
            match self.rootfs(reference).await {
                Err(ImageError::NotFound { .. }) => {
                    tracing::info!(image = %reference, "image not in the store: pulling it");
                    match self.pull(reference, &self.inner.credentials).await {
                        Ok(_) => self.rootfs(reference).await,
                        Err(e) => Err(e),
                    }
                }
                done => done,
            }
        };
        // The last caller of a name out removes its turn (clones are only made under this lock,
        // so the count cannot grow meanwhile).
        let mut pulls = self.inner.pulls.lock().unwrap_or_else(|p| p.into_inner());
        if Arc::strong_count(&turn) == 2 {
            pulls.remove(&name);
        }
        result
    }

    async fn lock(&self, exclusive: bool) -> Result<FileLock, ImageError> {
        let path = self.inner.layout.lock_file();
        blocking(move || {
            FileLock::acquire(&path, exclusive).map_err(ImageError::io("locking the image store"))
        })
        .await
    }
}

fn build_rootfs(
    layout: &Layout,
    image: &StoredImage,
    dest: &Path,
    r: &ImageRef,
) -> Result<(), ImageError> {
    let ctx = format!("building the root filesystem of {r}");
    let layers: Vec<PathBuf> = image
        .config
        .rootfs
        .diff_ids
        .iter()
        .map(|d| layout.layer(d))
        .collect();
    if let Some(missing) = layers.iter().find(|p| !p.is_dir()) {
        return Err(ImageError::corrupt(
            format!("image {r}"),
            format!(
                "layer {} is missing from the store; pull or import it again",
                missing.file_name().unwrap_or_default().to_string_lossy()
            ),
        ));
    }
    let tmp = tempfile::Builder::new()
        .prefix("rootfs-")
        .tempdir_in(layout.tmp_dir())
        .map_err(ImageError::io(&ctx))?;
    let root = tmp.path().join("root");
    fs::create_dir(&root).map_err(ImageError::io(&ctx))?;
    let refs: Vec<&Path> = layers.iter().map(PathBuf::as_path).collect();
    flatten(&refs, &root).map_err(ImageError::io(&ctx))?;
    syncfs(&root).map_err(ImageError::io(&ctx))?;
    match fs::rename(&root, dest) {
        Ok(()) => {}
        // Built concurrently by another process: use theirs.
        Err(_) if dest.is_dir() => {}
        Err(e) => return Err(ImageError::io(&ctx)(e)),
    }
    fsync_dir(&layout.rootfs_dir()).map_err(ImageError::io(&ctx))
}

/// The manifest a reference names: its exact name, or for a digest reference any image with
/// that manifest digest.
fn resolve(index: &RefIndex, r: &ImageRef) -> Result<Digest, ImageError> {
    if let Some(e) = index.refs.get(&r.to_string()) {
        return Ok(e.manifest.clone());
    }
    r.digest()
        .filter(|d| index.refs.values().any(|e| &e.manifest == *d))
        .cloned()
        .ok_or_else(|| ImageError::not_found(format!("image {r}")))
}

fn summary(
    layout: &Layout,
    index: &RefIndex,
    manifest: &Digest,
) -> Result<ImageSummary, ImageError> {
    let image = StoredImage::load(layout, manifest)?;
    let names = index
        .refs
        .iter()
        .filter(|(_, e)| &e.manifest == manifest)
        .map(|(n, _)| n.clone())
        .collect();
    Ok(ImageSummary {
        names,
        manifest_digest: manifest.clone(),
        config_digest: image.manifest.config.digest.clone(),
        size: image.size(),
        created: image.config.created.clone(),
        layers: image.manifest.layers.len(),
    })
}

/// Runs file work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
) -> Result<T, ImageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ImageError::Io {
            context: "running a store task".into(),
            source: std::io::Error::other(e),
        })?
}
