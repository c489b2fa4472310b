//! Namespaces: names are DNS-1123 labels; a new one is `Active`; the built-in ones may not
//! be deleted; deleting one removes everything in it in the same transaction, freeing what
//! its objects held (a Service's addresses).

use k8s_openapi::api::core::v1::Namespace;
use serde_json::Value;
use skiff_proto::kinds::{KindInfo, NAMESPACE};
use skiff_raft::mvcc::Op;

use super::{Registry, StoreView, Strategy};
use crate::objects::admission::{self, other};
use crate::objects::error::{ObjectError, Result};
use crate::objects::meta::meta_str;
use crate::objects::names;

/// Namespaces that exist from the start and may not be deleted.
pub const BUILTIN_NAMESPACES: &[&str] = &["default", "skiff-system", "kube-system"];

/// The Namespace strategy.
pub struct NamespaceStrategy;

impl Strategy for NamespaceStrategy {
    fn info(&self) -> &'static KindInfo {
        &NAMESPACE
    }

    fn admit(&self, obj: Value) -> Result<Value> {
        admission::typed::<Namespace>(self, obj, other::default_namespace, |_| Vec::new())
    }

    fn name_rule(&self, name: &str) -> Option<String> {
        names::dns1123_label(name)
    }

    fn check_delete(&self, name: &str) -> Result<()> {
        if BUILTIN_NAMESPACES.contains(&name) {
            return Err(ObjectError::Forbidden(format!(
                "namespace {name:?} is built in and may not be deleted"
            )));
        }
        Ok(())
    }

    fn cascade(&self, view: &dyn StoreView, registry: &Registry, obj: &Value) -> Result<Vec<Op>> {
        let name = meta_str(obj, "name").unwrap_or("");
        let mut ops = Vec::new();
        for kind in registry.iter().filter(|k| k.info().namespaced) {
            let prefix = format!("{}{name}/", kind.info().key_prefix());
            if kind.holds_claims() {
                for kv in view.range(&prefix)? {
                    if let Ok(o) = serde_json::from_slice::<Value>(&kv.value) {
                        ops.extend(kind.release(&o));
                    }
                }
            }
            ops.push(Op::DeletePrefix {
                prefix: prefix.into_bytes(),
            });
        }
        Ok(ops)
    }
}
