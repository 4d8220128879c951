//! Templates from images: list and inspect (anyone), pull, import and remove (admins: a
//! pull reaches out to a registry and every template takes the host's disk).
//!
//! A template that a live sandbox was made from is not removed (its layers are that
//! sandbox's root).

use std::sync::Arc;

use sbx_backend::{ImageError, ImageSource, ImageTemplate, Images, ProgressSender};

use crate::{Caller, Error, Service, State};

impl From<ImageError> for Error {
    fn from(error: ImageError) -> Self {
        match error {
            ImageError::NotFound(name) => Error::TemplateNotFound(name),
            ImageError::Exists(name) => {
                Error::Conflict(format!("template {name:?} already exists"))
            }
            ImageError::Invalid(message) => Error::Invalid(message),
            ImageError::Registry(message) => Error::Upstream(message),
            ImageError::TooLarge(message) => Error::TooLarge(message),
            ImageError::Busy(message) => Error::AtCapacity {
                message,
                retry_after: std::time::Duration::from_secs(10),
            },
            ImageError::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
                Error::InsufficientStorage(
                    "the host's disk is full; remove templates or try later".into(),
                )
            }
            ImageError::Io { context, source } => Error::internal_from(context, source),
        }
    }
}

/// A template marked as being removed; unmarked when dropped.
struct Removing<'a>(&'a Service, &'a str);

impl Drop for Removing<'_> {
    fn drop(&mut self) {
        self.0
            .inner
            .images_removing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(self.1);
    }
}

impl Service {
    /// Makes the daemon's image store available (once, at start).
    pub fn attach_images(&self, images: Arc<dyn Images>) {
        let _ = self.inner.images.set(images);
    }

    fn images(&self) -> Result<&Arc<dyn Images>, Error> {
        self.inner.images.get().ok_or_else(|| {
            Error::Unsupported("this daemon has no image store (templates from images)".into())
        })
    }

    pub async fn templates(&self, _caller: &Caller) -> Result<Vec<ImageTemplate>, Error> {
        Ok(self.images()?.list().await?)
    }

    pub async fn template(&self, _caller: &Caller, name: &str) -> Result<ImageTemplate, Error> {
        self.images()?
            .get(name)
            .await?
            .ok_or_else(|| Error::TemplateNotFound(name.to_owned()))
    }

    /// Checks that `caller` may make template `name` now (before a body is read).
    pub fn may_make_template(&self, caller: &Caller, name: &str) -> Result<(), Error> {
        caller.require_admin()?;
        self.images()?;
        if !sbx_backend::valid_template_name(name) {
            return Err(Error::Invalid(format!(
                "name: {name:?} must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )));
        }
        Ok(())
    }

    /// What [`Service::may_make_template`] checks, and that the name is free: asked before an
    /// import's upload is read (the store would refuse a taken name only at its end).
    pub async fn may_import_template(&self, caller: &Caller, name: &str) -> Result<(), Error> {
        self.may_make_template(caller, name)?;
        if self.images()?.get(name).await?.is_some() {
            return Err(ImageError::Exists(name.to_owned()).into());
        }
        Ok(())
    }

    /// Pulls or imports template `name`, telling `progress` how it goes.
    pub async fn make_template(
        &self,
        caller: &Caller,
        name: &str,
        source: ImageSource,
        progress: ProgressSender,
    ) -> Result<ImageTemplate, Error> {
        self.may_make_template(caller, name)?;
        let from = match &source {
            ImageSource::Registry { reference, .. } => reference.clone(),
            ImageSource::Archive(_) => "archive".into(),
        };
        let made = match tokio::time::timeout(
            crate::deadline::TEMPLATE_MAKE,
            self.images()?.make(name, source, progress),
        )
        .await
        {
            Ok(made) => made,
            Err(_) => Err(ImageError::Registry(format!(
                "the pull or import did not finish within {} minutes",
                crate::deadline::TEMPLATE_MAKE.as_secs() / 60
            ))),
        };
        match &made {
            Ok(template) => {
                self.inner.access.audit(
                    caller,
                    "template.created",
                    serde_json::json!({
                        "template": name,
                        "source": template.source,
                        "digest": template.digest,
                        "layers": template.layers.len(),
                    }),
                );
                tracing::info!(template = name, source = %template.source, "template made");
            }
            Err(error) => {
                tracing::warn!(template = name, from = %from, %error, "template not made");
            }
        }
        Ok(made?)
    }

    /// Removes template `name`, unless a live sandbox was made from it.
    pub async fn remove_template(&self, caller: &Caller, name: &str) -> Result<(), Error> {
        caller.require_admin()?;
        let images = self.images()?;
        if images.get(name).await?.is_none() {
            return Err(Error::TemplateNotFound(name.to_owned()));
        }
        // Under the admission lock: no create of this template is admitted meanwhile (one
        // admitted before has its row, counted here).
        {
            let _admission = self.inner.access.admission();
            let users = self
                .inner
                .store
                .list_sandboxes(&State::names_where(State::may_have_host_traces))?
                .into_iter()
                .filter(|row| row.template == name)
                .count();
            if users > 0 {
                return Err(Error::Conflict(format!(
                    "template {name:?} is the root of {users} live sandbox(es); destroy them first"
                )));
            }
            // A snapshot's files are a layer above its template: without it they are no root.
            let snapshots = self
                .inner
                .store
                .snapshots(&["creating", "ready", "deleted"], None)?
                .into_iter()
                .filter(|row| row.template == name)
                .count();
            if snapshots > 0 {
                return Err(Error::Conflict(format!(
                    "template {name:?} is the base of {snapshots} snapshot(s); delete them first"
                )));
            }
            let taken = self
                .inner
                .images_removing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.to_owned());
            if !taken {
                return Err(Error::Conflict(format!(
                    "template {name:?} is being removed already"
                )));
            }
        }
        // Whatever becomes of this call (a client gone drops it), the mark goes.
        let _removing = Removing(self, name);
        images.remove(name).await?;
        // What backends made of it (an engine's copy) goes too; one that cannot say so now
        // leaves it, which its log says.
        for backend in self.inner.backends.iter() {
            let removed = crate::deadline::run(
                crate::deadline::DESTROY,
                "template removal",
                backend.template_removed(name),
            )
            .await;
            if let Err(e) = removed {
                tracing::warn!(template = name, backend = backend.kind(), error = %e, "cannot remove the backend's copy of a removed template");
            }
        }
        self.inner.access.audit(
            caller,
            "template.removed",
            serde_json::json!({ "template": name }),
        );
        Ok(())
    }
}
