//! Templates pulled from an OCI registry (Docker Hub-style references, basic auth), through
//! `oci-client`: the manifest for linux/amd64 and its configuration first, then each layer the
//! store does not have yet, received into `tmp/` with its size and digest checked, then
//! unpacked like any other (its `diff_id` checked as it is).

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sbx_backend::{ImageError, ImageTemplate, ProgressSender};
use sha2::Digest as _;
use tokio::io::AsyncWriteExt;

use crate::archive::{check_layers, layer_from, RawConfig};
use crate::{layer_list, now_ms, sha256_hex, step, ImageStore, Reservation};

/// Whether `registry` (`host[:port]`) is on this machine: spoken to over plain HTTP.
fn loopback(registry: &str) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => registry.split(':').next().unwrap_or(registry),
    };
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn registry_error(registry: &str, e: impl std::fmt::Display) -> ImageError {
    ImageError::Registry(format!("registry {registry}: {e}"))
}

pub(crate) async fn pull(
    store: &Arc<ImageStore>,
    reservation: Reservation,
    reference: &str,
    credentials: Option<(String, String)>,
    progress: &ProgressSender,
) -> Result<ImageTemplate, ImageError> {
    let parsed: Reference = reference.parse().map_err(|e| {
        ImageError::Invalid(format!("{reference:?} is not an image reference: {e}"))
    })?;
    let registry = parsed.resolve_registry().to_owned();
    let mut insecure = store.config().insecure_registries.clone();
    if loopback(&registry) {
        insecure.push(registry.clone());
    }
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::HttpsExcept(insecure),
        connect_timeout: Some(Duration::from_secs(10)),
        read_timeout: Some(Duration::from_secs(60)),
        ..Default::default()
    });
    let auth = match credentials {
        Some((user, password)) => RegistryAuth::Basic(user, password),
        None => RegistryAuth::Anonymous,
    };
    let (manifest, digest, config) = client
        .pull_manifest_and_config(&parsed, &auth)
        .await
        .map_err(|e| registry_error(&registry, e))?;
    let config = RawConfig::parse(config.as_bytes())?;
    let diff_ids = config.diff_ids()?;
    check_layers(manifest.layers.len(), diff_ids.len())?;
    let max = store.config().max_image_bytes;
    let declared: u64 = manifest
        .layers
        .iter()
        .map(|l| u64::try_from(l.size).unwrap_or(u64::MAX))
        .fold(0, u64::saturating_add);
    if declared > max {
        return Err(ImageError::TooLarge(format!(
            "the image's layers are {declared} bytes; at most {max} are taken (images.max_image_mb)"
        )));
    }
    let reservation = Arc::new(reservation);
    let mut layers = Vec::new();
    let mut setid = 0;
    let mut left = max;
    for (descriptor, hex) in manifest.layers.iter().zip(&diff_ids) {
        let (hex, bytes, cleared) = if store.layer_dir(hex).is_dir() {
            store.add_layer(&reservation, Some(hex), |_| unreachable_fill(), progress)?
        } else {
            let blob = crate::Scratch(store.scratch("blob"));
            let received = receive(&client, &parsed, descriptor, &blob.0, progress).await;
            let outcome = match received {
                Ok(()) => {
                    let (store, reservation, progress, blob, hex) = (
                        store.clone(),
                        reservation.clone(),
                        progress.clone(),
                        blob.0.clone(),
                        hex.clone(),
                    );
                    tokio::task::spawn_blocking(move || {
                        layer_from(&store, &reservation, &blob, Some(&hex), left, &progress)
                    })
                    .await
                    .map_err(|e| ImageError::io("the unpacking failed", std::io::Error::other(e)))
                    .and_then(|r| r)
                }
                Err(e) => Err(e),
            };
            drop(blob);
            outcome?
        };
        left = left.saturating_sub(bytes);
        setid += cleared;
        layers.push((hex, bytes));
    }
    let reservation = Arc::try_unwrap(reservation)
        .map_err(|_| ImageError::Invalid("the pull is still unpacking".into()))?;
    let pinned = format!(
        "{}/{}@{digest}",
        parsed.resolve_registry(),
        parsed.repository()
    );
    let template = ImageTemplate {
        name: reservation.name().to_owned(),
        source: pinned,
        digest: Some(digest),
        layers: layer_list(&layers),
        config: config.defaults(),
        created_ms: now_ms(),
        setid_cleared: setid,
        user_ids: None,
    };
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.finish(reservation, template))
        .await
        .map_err(|e| ImageError::io("the pull failed", std::io::Error::other(e)))?
}

/// A stored layer is reused: nothing to fill.
fn unreachable_fill() -> Result<(String, crate::unpack::Stats), ImageError> {
    Err(ImageError::Invalid(
        "a stored layer vanished during the pull".into(),
    ))
}

/// Receives one blob into `path`: no more than its descriptor's size, and its digest checked.
async fn receive(
    client: &Client,
    reference: &Reference,
    descriptor: &oci_client::manifest::OciDescriptor,
    path: &Path,
    progress: &ProgressSender,
) -> Result<(), ImageError> {
    let registry = reference.resolve_registry();
    let expected = sha256_hex(&descriptor.digest).ok_or_else(|| {
        ImageError::Invalid(format!(
            "layer digest {:?} is not sha256",
            descriptor.digest
        ))
    })?;
    let size = u64::try_from(descriptor.size).unwrap_or(0);
    let mut stream = client
        .pull_blob_stream(reference, descriptor)
        .await
        .map_err(|e| registry_error(registry, e))?;
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(|e| ImageError::io("cannot receive a layer", e))?;
    let mut hasher = sha2::Sha256::new();
    let mut total = 0u64;
    let mut shown = 0u64;
    while let Some(chunk) = stream.stream.next().await {
        let chunk = chunk.map_err(|e| registry_error(registry, e))?;
        total += chunk.len() as u64;
        if total > size {
            return Err(ImageError::Invalid(format!(
                "layer {}: the registry sent more than its {size} bytes",
                descriptor.digest
            )));
        }
        hasher.update(&chunk);
        file.write_all(&chunk)
            .await
            .map_err(|e| ImageError::io("cannot receive a layer", e))?;
        if total - shown >= 4 << 20 || total == size {
            shown = total;
            let _ = progress.try_send(step("receive", Some(expected), total, Some(size)));
        }
    }
    file.flush()
        .await
        .map_err(|e| ImageError::io("cannot receive a layer", e))?;
    let actual = format!("{:x}", hasher.finalize());
    if actual != expected || total != size {
        return Err(ImageError::Invalid(format!(
            "layer {}: received {total} bytes with digest sha256:{actual}",
            descriptor.digest
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_registries() {
        assert!(super::loopback("localhost:5000"));
        assert!(super::loopback("127.0.0.1:5000"));
        assert!(super::loopback("[::1]:5000"));
        assert!(!super::loopback("registry-1.docker.io"));
        assert!(!super::loopback("10.0.0.1:5000"));
    }
}
