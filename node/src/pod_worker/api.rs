//! What a pod worker asks of the control plane: the data of ConfigMaps and Secrets it mounts
//! or reads into the environment, its status report, and the last step of its deletion. The
//! agent's is the object API [`Client`]; unit tests use one in memory.

use std::collections::BTreeMap;
use std::future::Future;

use std::path::PathBuf;

use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret};
use skiff_proto::objects::{Api, ApiError, DeleteParams};
use skiff_proto::{Client, ClientError};

use super::config_sources::{ConfigError, SourceKind};
use super::events::PodEvent;

/// Key → bytes of a ConfigMap or a Secret.
pub type SourceData = BTreeMap<String, Vec<u8>>;

/// The control-plane calls of a pod worker.
pub trait PodApi: Send + Sync + 'static {
    /// The data of ConfigMap or Secret `namespace/name`; `None` when it does not exist.
    fn source_data(
        &self,
        namespace: &str,
        kind: SourceKind,
        name: &str,
    ) -> impl Future<Output = Result<Option<SourceData>, ConfigError>> + Send;

    /// The host folder of the volume claim `namespace/claim` is bound to.
    fn claim_folder(
        &self,
        namespace: &str,
        claim: &str,
    ) -> impl Future<Output = Result<PathBuf, ConfigError>> + Send;

    /// Replace the status of `pod` (its spec and metadata as the worker last saw them).
    fn update_status(&self, pod: &Pod) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Remove pod `namespace/name` of uid `uid` for good, once its containers are gone; a pod
    /// already gone is fine.
    fn finish_delete(
        &self,
        namespace: &str,
        name: &str,
        uid: &str,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;

    /// Write `event`, seen by node `node`: created the first time, counted again after.
    fn record_event(
        &self,
        event: &PodEvent,
        node: &str,
    ) -> impl Future<Output = Result<(), ApiError>> + Send;
}

fn is_not_found(e: &ApiError) -> bool {
    matches!(e, ApiError::Client(ClientError::Rejected(s)) if s.code() == tonic::Code::NotFound)
}

impl PodApi for Client {
    async fn source_data(
        &self,
        namespace: &str,
        kind: SourceKind,
        name: &str,
    ) -> Result<Option<SourceData>, ConfigError> {
        match kind {
            SourceKind::ConfigMap => {
                let api: Api<ConfigMap> = Api::new(self.clone(), namespace);
                match api.get(name).await {
                    Ok(cm) => {
                        let mut out: SourceData = cm
                            .data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.into_bytes()))
                            .collect();
                        for (k, v) in cm.binary_data.unwrap_or_default() {
                            out.insert(k, v.0);
                        }
                        Ok(Some(out))
                    }
                    Err(e) if is_not_found(&e) => Ok(None),
                    Err(e) => Err(ConfigError(format!("configmap {name:?}: {e}"))),
                }
            }
            SourceKind::Secret => {
                let api: Api<Secret> = Api::new(self.clone(), namespace);
                match api.get(name).await {
                    Ok(s) => {
                        let mut out: SourceData = s
                            .data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.0))
                            .collect();
                        for (k, v) in s.string_data.unwrap_or_default() {
                            out.insert(k, v.into_bytes());
                        }
                        Ok(Some(out))
                    }
                    Err(e) if is_not_found(&e) => Ok(None),
                    Err(e) => Err(ConfigError(format!("secret {name:?}: {e}"))),
                }
            }
        }
    }

    async fn claim_folder(&self, namespace: &str, claim: &str) -> Result<PathBuf, ConfigError> {
        let claims: Api<PersistentVolumeClaim> = Api::new(self.clone(), namespace);
        let pvc = claims
            .get(claim)
            .await
            .map_err(|e| ConfigError(format!("persistentvolumeclaim {claim:?}: {e}")))?;
        let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
        let volume = pvc
            .spec
            .and_then(|s| s.volume_name)
            .filter(|v| !v.is_empty());
        let Some(volume) = volume.filter(|_| bound) else {
            return Err(ConfigError(format!(
                "persistentvolumeclaim {claim:?} is not bound to a volume yet"
            )));
        };
        let volumes: Api<PersistentVolume> = Api::new(self.clone(), "");
        let pv = volumes
            .get(&volume)
            .await
            .map_err(|e| ConfigError(format!("persistentvolume {volume:?}: {e}")))?;
        let spec = pv.spec.unwrap_or_default();
        spec.host_path
            .map(|h| h.path)
            .or(spec.local.map(|l| l.path))
            .map(PathBuf::from)
            .ok_or_else(|| {
                ConfigError(format!(
                    "persistentvolume {volume:?}: neither hostPath nor local: the agent mounts only host folders"
                ))
            })
    }

    async fn update_status(&self, pod: &Pod) -> Result<(), ApiError> {
        let api: Api<Pod> = Api::new(
            self.clone(),
            pod.metadata.namespace.as_deref().unwrap_or(""),
        );
        api.update_status(pod).await.map(drop)
    }

    async fn finish_delete(&self, namespace: &str, name: &str, uid: &str) -> Result<(), ApiError> {
        let api: Api<Pod> = Api::new(self.clone(), namespace);
        let params = DeleteParams {
            uid: uid.to_string(),
            grace_period_seconds: Some(0),
            ..Default::default()
        };
        match api.delete(name, &params).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn record_event(&self, event: &PodEvent, node: &str) -> Result<(), ApiError> {
        let now = jiff::Timestamp::now().to_string();
        let create = || async {
            let body = serde_json::to_vec(&event.object(node, &now))?;
            self.create_object("events", &event.namespace, body).await?;
            Ok::<(), ApiError>(())
        };
        if event.count > 1 {
            let patch = serde_json::to_vec(&event.recount(&now))?;
            match self
                .patch_object("events", &event.namespace, &event.name(), patch, false)
                .await
            {
                Ok(_) => return Ok(()),
                // Gone (cleaned up, or its first write lost): written anew.
                Err(ClientError::Rejected(s)) if s.code() == tonic::Code::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        match create().await {
            // Written by this agent before it restarted: counted on it.
            Err(ApiError::Client(ClientError::Rejected(s)))
                if s.code() == tonic::Code::AlreadyExists =>
            {
                let patch = serde_json::to_vec(&event.recount(&now))?;
                self.patch_object("events", &event.namespace, &event.name(), patch, false)
                    .await?;
                Ok(())
            }
            other => other,
        }
    }
}
