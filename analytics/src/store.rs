//! Where the snapshot files live: a local folder (the default) or object storage (`s3://`),
//! both through the `object_store` crate, whose writes are whole-object (a local write goes to
//! a temporary file renamed into place), so a killed writer never leaves a half file visible.

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt};
use std::path::PathBuf;
use std::sync::Arc;
use url::Url;

/// A snapshot location.
#[derive(Clone, Debug)]
pub struct Store {
    pub os: Arc<dyn ObjectStore>,
    /// Prefix of every object inside `os`.
    pub root: ObjPath,
    /// The URL DataFusion reads the tables from (`file:///abs/dir/` or `s3://bucket/prefix/`).
    pub url: Url,
    /// The folder, for a local store.
    pub local: Option<PathBuf>,
}

impl Store {
    /// Opens `location`: an `s3://bucket/prefix` URL (credentials and region from the usual
    /// `AWS_*` environment variables) or a local folder, created if missing.
    pub fn open(location: &str) -> Result<Store> {
        if location.starts_with("s3://") {
            let url = Url::parse(location).with_context(|| format!("--snapshots {location}: not a valid URL"))?;
            let bucket = url.host_str().ok_or_else(|| anyhow!("--snapshots {location}: no bucket name"))?;
            let s3 = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .build()
                .with_context(|| format!("--snapshots {location}: cannot set up S3 (set AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_ENDPOINT for another S3 service)"))?;
            let prefix = url.path().trim_matches('/');
            let mut base = url.clone();
            base.set_path(&format!("/{prefix}{}", if prefix.is_empty() { "" } else { "/" }));
            return Ok(Store { os: Arc::new(s3), root: ObjPath::from(prefix), url: base, local: None });
        }
        if location.contains("://") {
            anyhow::bail!("--snapshots {location}: only local folders and s3:// URLs are supported");
        }
        let dir = PathBuf::from(location);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the snapshot folder {}; pass --snapshots DIR", dir.display()))?;
        let dir = dir.canonicalize().with_context(|| format!("cannot resolve {}", dir.display()))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(&dir)
            .with_context(|| format!("cannot use {} as a snapshot folder", dir.display()))?;
        let url = Url::from_directory_path(&dir).map_err(|_| anyhow!("{} is not an absolute path", dir.display()))?;
        Ok(Store { os: Arc::new(fs), root: ObjPath::from(""), url, local: Some(dir) })
    }

    fn path(&self, rel: &str) -> ObjPath {
        if self.root.as_ref().is_empty() {
            ObjPath::from(rel)
        } else {
            ObjPath::from(format!("{}/{rel}", self.root))
        }
    }

    fn rel(&self, p: &ObjPath) -> String {
        let s = p.as_ref();
        let root = self.root.as_ref();
        if root.is_empty() {
            s.to_string()
        } else {
            s.strip_prefix(root).unwrap_or(s).trim_start_matches('/').to_string()
        }
    }

    /// Writes one whole object.
    pub async fn put(&self, rel: &str, bytes: Bytes) -> Result<()> {
        self.os.put(&self.path(rel), bytes.into()).await.with_context(|| format!("cannot write {}", self.show(rel)))?;
        Ok(())
    }

    pub async fn get(&self, rel: &str) -> Result<Bytes> {
        let r = self.os.get(&self.path(rel)).await.with_context(|| format!("cannot read {}", self.show(rel)))?;
        Ok(r.bytes().await?)
    }

    pub async fn delete(&self, rel: &str) -> Result<()> {
        match self.os.delete(&self.path(rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot delete {}", self.show(rel))),
        }
    }

    /// Objects under `rel_prefix`, as names relative to the store, sorted.
    pub async fn list(&self, rel_prefix: &str) -> Result<Vec<String>> {
        let prefix = self.path(rel_prefix);
        let metas: Vec<_> = match self.os.list(Some(&prefix)).try_collect().await {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot list {}", self.show(rel_prefix))),
        };
        let mut names: Vec<String> = metas.iter().map(|m| self.rel(&m.location)).collect();
        names.sort();
        Ok(names)
    }

    /// A name for messages: the local path or the URL.
    pub fn show(&self, rel: &str) -> String {
        match &self.local {
            Some(dir) => dir.join(rel).display().to_string(),
            None => format!("{}{rel}", self.url),
        }
    }

    /// Removes temporary files (`NAME#N`) a killed local writer left behind; object stores
    /// have none.
    pub fn remove_leftover_temporaries(&self) {
        let Some(dir) = &self.local else { return };
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else { continue };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let Some((_, suffix)) =
                    p.file_name().and_then(|n| n.to_str()).and_then(|n| n.rsplit_once('#'))
                {
                    if !suffix.is_empty() && suffix.bytes().all(|b| b.is_ascii_digit()) {
                        let _ = std::fs::remove_file(&p);
                    }
                }
            }
        }
    }
}
