//! The task definition as a JSON document in the shape of `register-task-definition`'s input:
//! the fields this function supports ([`SCHEMA`]), RFC 7396 merge patches over it, the
//! normalized form two documents are compared in, the names of the fields that differ, and a
//! copy with secrets redacted. Knows nothing of the spec or the AWS SDK.
//!
//! An override naming an unsupported field is a validation error rather than being silently
//! dropped, and the comparison that decides whether to register a new revision looks at exactly
//! these fields.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

/// Environment variables whose values are secrets: redacted wherever a document is shown.
pub const SECRET_ENVIRONMENT: &[&str] = &["DELEGATE_TOKEN", "ACCOUNT_SECRET"];

/// Give every supported field the JSON type ECS uses for it (numbers, booleans, strings).
pub fn coerce(v: &mut Value, schema: &[(&str, Field)]) {
    let Some(obj) = v.as_object_mut() else { return };
    for (k, x) in obj.iter_mut() {
        let Some((_, field)) = schema.iter().find(|(name, _)| name == k) else {
            continue;
        };
        match field {
            Int => {
                if let Some(n) = x.as_str().and_then(|s| s.trim().parse::<i32>().ok()) {
                    *x = json!(n);
                }
            }
            Bool => {
                if let Some(b) = x.as_str().and_then(|s| s.trim().parse::<bool>().ok()) {
                    *x = json!(b);
                }
            }
            Str => {
                if let Some(n) = x.as_number() {
                    *x = json!(n.to_string());
                }
            }
            Object(inner) => coerce(x, inner),
            ObjectList(inner) => {
                for item in x.as_array_mut().into_iter().flatten() {
                    coerce(item, inner);
                }
            }
            StrList | StrMap => {}
        }
    }
}

/// RFC 7396 JSON merge patch: objects merge, `null` removes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in patch {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// Apply the part of `patch` that patches containers by name, `{"containerDefinitions":
/// {"<name>": <merge patch>}}`, to `doc`, and return the rest of the patch. RFC 7396 replaces
/// arrays whole, so without this, changing one field of the delegate's container (its health
/// check, say) would mean restating the whole container list. A name no container has adds
/// one; `null` removes the named container. A list is left to the plain merge patch.
pub fn patch_containers_by_name(doc: &mut Value, patch: &Value) -> Value {
    let mut rest = patch.clone();
    let Some(by_name) = patch["containerDefinitions"].as_object() else {
        return rest;
    };
    if let Some(o) = rest.as_object_mut() {
        o.remove("containerDefinitions");
    }
    let Some(containers) = doc["containerDefinitions"].as_array_mut() else {
        return rest;
    };
    for (name, p) in by_name {
        let at = containers.iter().position(|c| c["name"] == name.as_str());
        match (at, p.is_null()) {
            (Some(i), true) => {
                containers.remove(i);
            }
            (Some(i), false) => merge_patch(&mut containers[i], p),
            (None, true) => {}
            (None, false) => {
                let mut c = json!({"name": name});
                merge_patch(&mut c, p);
                containers.push(c);
            }
        }
    }
    rest
}

/// What a field of the supported document holds.
pub enum Field {
    Str,
    Int,
    Bool,
    StrList,
    StrMap,
    Object(&'static [(&'static str, Field)]),
    ObjectList(&'static [(&'static str, Field)]),
}

use Field::*;

const CONTAINER: &[(&str, Field)] = &[
    ("name", Str),
    ("image", Str),
    ("essential", Bool),
    ("cpu", Int),
    ("memory", Int),
    ("memoryReservation", Int),
    ("hostname", Str),
    ("command", StrList),
    ("entryPoint", StrList),
    ("workingDirectory", Str),
    ("user", Str),
    ("stopTimeout", Int),
    ("startTimeout", Int),
    ("readonlyRootFilesystem", Bool),
    ("privileged", Bool),
    ("dockerLabels", StrMap),
    (
        "portMappings",
        ObjectList(&[("containerPort", Int), ("hostPort", Int), ("protocol", Str)]),
    ),
    ("environment", ObjectList(&[("name", Str), ("value", Str)])),
    ("secrets", ObjectList(&[("name", Str), ("valueFrom", Str)])),
    (
        "ulimits",
        ObjectList(&[("name", Str), ("softLimit", Int), ("hardLimit", Int)]),
    ),
    (
        "healthCheck",
        Object(&[
            ("command", StrList),
            ("interval", Int),
            ("timeout", Int),
            ("retries", Int),
            ("startPeriod", Int),
        ]),
    ),
    (
        "logConfiguration",
        Object(&[("logDriver", Str), ("options", StrMap)]),
    ),
    ("linuxParameters", Object(&[("initProcessEnabled", Bool)])),
];

/// The fields of the task definition document this function supports.
pub const SCHEMA: &[(&str, Field)] = &[
    ("family", Str),
    ("taskRoleArn", Str),
    ("executionRoleArn", Str),
    ("networkMode", Str),
    ("cpu", Str),
    ("memory", Str),
    ("requiresCompatibilities", StrList),
    ("pidMode", Str),
    ("ipcMode", Str),
    ("containerDefinitions", ObjectList(CONTAINER)),
    (
        "runtimePlatform",
        Object(&[("cpuArchitecture", Str), ("operatingSystemFamily", Str)]),
    ),
    ("ephemeralStorage", Object(&[("sizeInGiB", Int)])),
];

fn check_fields(path: &str, v: &Value, schema: &[(&str, Field)], out: &mut Vec<String>) {
    let Some(obj) = v.as_object() else {
        out.push(format!("{path} must be an object"));
        return;
    };
    for (k, v) in obj {
        let p = format!("{path}.{k}");
        let Some((_, field)) = schema.iter().find(|(name, _)| name == k) else {
            let known: Vec<&str> = schema.iter().map(|(n, _)| *n).collect();
            out.push(format!(
                "{p} is not supported by this function (supported here: {})",
                known.join(", ")
            ));
            continue;
        };
        if v.is_null() {
            continue; // a merge patch removing the field
        }
        check_field(&p, v, field, out);
    }
}

fn check_field(p: &str, v: &Value, field: &Field, out: &mut Vec<String>) {
    let ok = match field {
        Str => v.is_string() || v.is_number(),
        Int => int_value(v).is_some(),
        Bool => v.is_boolean() || v.as_str().is_some_and(|s| s == "true" || s == "false"),
        StrList => v
            .as_array()
            .is_some_and(|a| a.iter().all(|i| i.is_string())),
        StrMap => v
            .as_object()
            .is_some_and(|o| o.values().all(|i| i.is_string())),
        Object(inner) => {
            check_fields(p, v, inner, out);
            true
        }
        ObjectList(inner) => match (v.as_array(), v.as_object()) {
            (Some(a), _) => {
                for (i, item) in a.iter().enumerate() {
                    check_fields(&format!("{p}[{i}]"), item, inner, out);
                }
                true
            }
            // Containers patched by name (see `patch_containers_by_name`).
            (None, Some(by_name)) if p.ends_with(".containerDefinitions") => {
                for (name, item) in by_name {
                    if !item.is_null() {
                        check_fields(&format!("{p}.{name}"), item, inner, out);
                    }
                }
                true
            }
            _ => false,
        },
    };
    if !ok {
        let what = match field {
            Str => "a string",
            Int => "a whole number from -2147483648 to 2147483647 (what ECS stores)",
            Bool => "true or false",
            StrList => "a list of strings",
            StrMap => "an object of string values",
            Object(_) => "an object",
            ObjectList(_) => "a list of objects",
        };
        out.push(format!("{p} must be {what}"));
    }
}

/// What is wrong with `TaskDefinitionOverrides`, one message per bad field, each starting with
/// the field's path.
pub fn check_overrides(patch: &Value) -> Vec<String> {
    let mut out = Vec::new();
    check_fields("TaskDefinitionOverrides", patch, SCHEMA, &mut out);
    for (k, unit, property) in [("cpu", "cpu units", "Cpu"), ("memory", "MiB", "Memory")] {
        // ECS accepts "1 vCPU" or "8 GB" but stores units: the comparison would never match.
        let v = &patch[k];
        if !v.is_null()
            && v.as_u64().is_none()
            && v.as_str().is_none_or(|s| s.parse::<u32>().is_err())
        {
            out.push(format!("TaskDefinitionOverrides.{k} must be a whole number of {unit} (e.g. \"2048\"); better, set {property}"));
        }
    }
    if patch.get("family").is_some() {
        out.push("TaskDefinitionOverrides.family: set TaskDefinitionFamily instead".to_string());
    }
    out
}

/// The comparable form of a document: defaults filled in, empties dropped, name-keyed lists
/// sorted, numbers as ECS returns them. Two documents that ECS would treat as the same
/// definition normalize to equal values.
pub fn normalize(doc: &Value) -> Value {
    let mut d = doc.clone();
    if let Some(o) = d.as_object_mut() {
        o.remove("family");
        if !o.contains_key("networkMode") {
            o.insert("networkMode".into(), json!("bridge"));
        }
        for k in ["cpu", "memory"] {
            if let Some(v) = o.get(k).cloned() {
                if let Some(n) = v.as_u64() {
                    o.insert(k.into(), json!(n.to_string()));
                }
            }
        }
        let awsvpc = o.get("networkMode") == Some(&json!("awsvpc"));
        if let Some(Value::Array(cs)) = o.get_mut("containerDefinitions") {
            for c in cs.iter_mut() {
                normalize_container(c, awsvpc);
            }
            cs.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        }
        if let Some(Value::Array(rc)) = o.get_mut("requiresCompatibilities") {
            rc.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
        }
    }
    drop_empty(&mut d);
    d
}

fn normalize_container(c: &mut Value, awsvpc: bool) {
    let Some(o) = c.as_object_mut() else { return };
    o.entry("essential").or_insert(json!(true));
    if o.get("cpu") == Some(&json!(0)) {
        o.remove("cpu");
    }
    // ECS does not store environment variables with an empty value.
    if let Some(Value::Array(env)) = o.get_mut("environment") {
        env.retain(|e| e["value"].as_str().is_some_and(|v| !v.is_empty()));
    }
    for k in ["environment", "secrets"] {
        if let Some(Value::Array(a)) = o.get_mut(k) {
            a.sort_by(|x, y| x["name"].as_str().cmp(&y["name"].as_str()));
        }
    }
    if let Some(Value::Array(pm)) = o.get_mut("portMappings") {
        for m in pm.iter_mut() {
            let cp = m["containerPort"].clone();
            if let Some(mo) = m.as_object_mut() {
                mo.entry("protocol").or_insert(json!("tcp"));
                // ECS fills in the host port: the container port under awsvpc, 0 (dynamic) else.
                mo.entry("hostPort")
                    .or_insert(if awsvpc { cp } else { json!(0) });
            }
        }
    }
    // ECS fills in the health check's defaults.
    if let Some(hc) = o.get_mut("healthCheck").and_then(Value::as_object_mut) {
        hc.entry("interval").or_insert(json!(30));
        hc.entry("timeout").or_insert(json!(5));
        hc.entry("retries").or_insert(json!(3));
    }
}

pub fn drop_empty(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (_, x) in o.iter_mut() {
                drop_empty(x);
            }
            o.retain(|_, x| {
                !(x.is_null()
                    || x.as_array().is_some_and(|a| a.is_empty())
                    || x.as_object().is_some_and(|m| m.is_empty()))
            });
        }
        Value::Array(a) => a.iter_mut().for_each(drop_empty),
        _ => {}
    }
}

/// A copy safe to show in a plan or a log: secret environment values replaced.
pub fn redacted(doc: &Value) -> Value {
    let mut d = doc.clone();
    if let Some(Value::Array(cs)) = d.get_mut("containerDefinitions") {
        for c in cs {
            if let Some(Value::Array(env)) = c.get_mut("environment") {
                for e in env {
                    let secret = e["name"]
                        .as_str()
                        .is_some_and(|n| SECRET_ENVIRONMENT.contains(&n));
                    if secret {
                        e["value"] = json!("<redacted>");
                    }
                }
            }
        }
    }
    d
}

/// A task definition document for `Debug`: shows it [`redacted`], so that a struct holding a
/// rendered or described revision can derive nothing that prints the delegate's token.
pub struct Shown<'a>(pub &'a Value);

impl std::fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", redacted(self.0))
    }
}

/// A whole number ECS can store (an i32), given as a number or a string.
pub fn int_value(v: &Value) -> Option<i32> {
    match v {
        Value::Number(n) => n.as_i64().and_then(|n| i32::try_from(n).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Names of the fields that differ between two normalized documents (names only: values may be
/// secrets).
pub fn differences(old: &Value, new: &Value) -> Vec<String> {
    /// The keys of either object.
    fn keys<'a>(a: &'a Value, b: &'a Value) -> BTreeSet<&'a String> {
        [a, b]
            .into_iter()
            .filter_map(Value::as_object)
            .flat_map(|o| o.keys())
            .collect()
    }
    let mut out = Vec::new();
    for k in keys(old, new) {
        if old.get(k) == new.get(k) {
            continue;
        }
        if k == "containerDefinitions" {
            let (a, b) = (&old[k][0], &new[k][0]);
            for ck in keys(a, b) {
                if a.get(ck) == b.get(ck) {
                    continue;
                }
                if ck == "environment" {
                    let names = |v: &Value| -> BTreeSet<(String, String)> {
                        v.as_array()
                            .into_iter()
                            .flatten()
                            .map(|e| {
                                (
                                    e["name"].as_str().unwrap_or("").to_string(),
                                    e["value"].to_string(),
                                )
                            })
                            .collect()
                    };
                    let (ea, eb) = (names(&a[ck]), names(&b[ck]));
                    let changed: BTreeSet<&String> =
                        ea.symmetric_difference(&eb).map(|(n, _)| n).collect();
                    for n in changed {
                        out.push(format!("environment {n}"));
                    }
                } else {
                    out.push(format!("container {ck}"));
                }
            }
        } else {
            out.push(k.clone());
        }
    }
    out
}
