//! A kind added from outside the control crate: one strategy module (this file's `Widget`
//! and `WidgetStrategy`) and one registry entry (`Registry::builtin(..).with(..)`). The store
//! serves it like a built-in kind: defaults, validation naming the field, list, delete, and
//! the cascade of a namespace's deletion.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use skiff_control::objects::admission::{self};
use skiff_control::objects::kinds::{Registry, Strategy};
use skiff_control::objects::store::{DeleteOptions, ListOptions};
use skiff_control::objects::{FieldError, ObjectError, ObjectStore};
use skiff_proto::kinds::KindInfo;
use skiff_raft::{NodeConfig, RaftNode};

// --- the strategy module of the new kind -------------------------------------------------

const WIDGET: KindInfo = KindInfo {
    kind: "Widget",
    group: "example.skiff.dev",
    version: "v1",
    plural: "widgets",
    singular: "widget",
    short_names: &["wd"],
    namespaced: true,
    has_status: false,
};

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Widget {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: WidgetSpec,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WidgetSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    color: Option<String>,
    #[serde(default)]
    size: i64,
}

skiff_control::object_type!(
    Widget,
    "example.skiff.dev",
    "v1",
    "Widget",
    "widgets",
    NamespaceResourceScope
);

struct WidgetStrategy;

impl Strategy for WidgetStrategy {
    fn info(&self) -> &'static KindInfo {
        &WIDGET
    }

    fn admit(&self, obj: Value) -> Result<Value, ObjectError> {
        admission::typed::<Widget>(
            self,
            obj,
            |w| {
                w.spec.color.get_or_insert_with(|| "blue".into());
            },
            |w| {
                if w.spec.size < 0 {
                    vec![FieldError::new(
                        "spec.size",
                        format!(
                            "Invalid value: {}: must be greater than or equal to 0",
                            w.spec.size
                        ),
                    )]
                } else {
                    Vec::new()
                }
            },
        )
    }
}

// --- the test ---------------------------------------------------------------------------

async fn one_member_store(dir: &std::path::Path) -> ObjectStore {
    let addr = "127.0.0.1:1".to_string();
    let node = RaftNode::open(NodeConfig::new(1, addr.clone(), dir.into(), "it".into()))
        .await
        .expect("open a member");
    node.initialize(BTreeMap::from([(1, addr)]))
        .await
        .expect("initialize");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while node.leader().is_none() {
        assert!(tokio::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let store = ObjectStore::new(node)
        .with_registry(Registry::builtin(Default::default()).with(WidgetStrategy));
    store.ensure_builtin_objects().await;
    store
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON")
}

#[tokio::test]
async fn a_kind_added_by_one_strategy_and_one_registry_entry_is_served_like_a_built_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = one_member_store(dir.path()).await;

    // Created with the kind's defaults, found by its short name.
    let w = json!({"apiVersion": "example.skiff.dev/v1", "kind": "Widget",
                   "metadata": {"name": "w1"}, "spec": {"size": 3}});
    let created = store
        .create("wd", "default", w.to_string().as_bytes(), 0)
        .await
        .expect("create a widget");
    assert_eq!(created.object["spec"]["color"], "blue");
    assert!(created.object["metadata"]["uid"].is_string());

    // Bad input names the field and stores nothing.
    let bad = json!({"metadata": {"name": "w2"}, "spec": {"size": -1}});
    let e = store
        .create("widgets", "default", bad.to_string().as_bytes(), 0)
        .await
        .expect_err("a negative size is refused");
    assert!(e.to_string().contains("spec.size"), "{e}");
    let e = store
        .create(
            "widgets",
            "default",
            json!({"metadata": {"name": "Not_A_Name"}})
                .to_string()
                .as_bytes(),
            0,
        )
        .await
        .expect_err("a bad name is refused");
    assert!(e.to_string().contains("metadata.name"), "{e}");

    // Applied as a manifest, listed, read back.
    let manifest = json!({"apiVersion": "example.skiff.dev/v1", "kind": "Widget",
                          "metadata": {"name": "w3", "namespace": "default"}, "spec": {"size": 1, "color": "red"}});
    store
        .apply(manifest.to_string().as_bytes(), "", 0)
        .await
        .expect("apply a widget");
    let page = store
        .list("widgets", &ListOptions::default())
        .await
        .expect("list");
    let names: Vec<String> = page
        .items
        .iter()
        .map(|i| {
            json_of(i)["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert_eq!(names, vec!["w1", "w3"]);
    let (got, _) = store
        .get("widgets", "default", "w3", false)
        .await
        .expect("get");
    assert_eq!(json_of(&got)["spec"]["color"], "red");

    // Deleted on its own, and with its namespace.
    store
        .delete("widgets", "default", "w1", &DeleteOptions::default(), 0)
        .await
        .expect("delete");
    let ns = json!({"metadata": {"name": "team"}});
    store
        .create("namespaces", "", ns.to_string().as_bytes(), 0)
        .await
        .expect("namespace");
    store
        .create(
            "widgets",
            "team",
            json!({"metadata": {"name": "w4"}}).to_string().as_bytes(),
            0,
        )
        .await
        .expect("a widget in the namespace");
    store
        .delete("namespaces", "", "team", &DeleteOptions::default(), 0)
        .await
        .expect("delete the namespace");
    let left = store
        .list("widgets", &ListOptions::default())
        .await
        .expect("list");
    assert_eq!(left.items.len(), 1, "only w3 is left");
}
