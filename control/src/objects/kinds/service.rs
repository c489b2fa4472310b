//! Services: names are DNS-1035 labels; defaults and validation as [`admission::service`]
//! says; a ClusterIP and NodePorts are allocated from the service range and claimed in the
//! Service's own write ([`service_alloc`]), and freed in the write that removes it.

use k8s_openapi::api::core::v1::Service;
use serde_json::Value;
use skiff_proto::kinds::{KindInfo, SERVICE};
use skiff_raft::mvcc::Op;

use super::{StoreView, Strategy};
use crate::objects::admission::{self, service};
use crate::objects::error::Result;
use crate::objects::names;
use crate::objects::patch::schema::{self, Schema};
use crate::objects::service_alloc::{self, Claims, ServiceRange, Taken};

/// The Service strategy.
pub struct ServiceStrategy {
    range: ServiceRange,
}

impl ServiceStrategy {
    /// Services allocating ClusterIPs from `range`.
    pub fn new(range: ServiceRange) -> Self {
        Self { range }
    }
}

/// The keys of every held Service address.
fn taken(view: &dyn StoreView) -> Result<Taken> {
    let mut taken = Taken::new();
    for prefix in service_alloc::PREFIXES {
        taken.extend(
            view.range(prefix)?
                .into_iter()
                .map(|kv| String::from_utf8_lossy(&kv.key).into_owned()),
        );
    }
    Ok(taken)
}

impl Strategy for ServiceStrategy {
    fn info(&self) -> &'static KindInfo {
        &SERVICE
    }

    fn merge_schema(&self) -> &'static Schema {
        &schema::SERVICE
    }

    fn admit(&self, obj: Value) -> Result<Value> {
        admission::typed::<Service>(
            self,
            obj,
            service::default_service,
            service::validate_service,
        )
    }

    fn name_rule(&self, name: &str) -> Option<String> {
        names::dns1035_label(name)
    }

    fn claims(
        &self,
        view: &dyn StoreView,
        current: Option<&Value>,
        next: &mut Value,
        owner: &str,
    ) -> Result<Claims> {
        let taken = taken(view)?;
        match current {
            None => service_alloc::for_create(self.range, next, owner, &taken),
            Some(current) => service_alloc::for_update(current, next, owner, &taken),
        }
    }

    fn holds_claims(&self) -> bool {
        true
    }

    fn release(&self, obj: &Value) -> Vec<Op> {
        service_alloc::release(obj)
    }
}
