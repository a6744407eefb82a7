//! The record store: one DynamoDB item per delegate, the only record heal trusts.
//!
//! The item holds the delegate's owner (the full StackId, whose GUID is never reused, and the
//! logical id), the last committed configuration (a [`Record`], secrets excluded), a [`State`],
//! a version, the requests it has answered (with their answers) and a lease. Only the function's
//! role may write the table (template.yaml), so unlike tags nobody else can steer heal.
//!
//! Every write is a whole-item put conditional on the version that was read (an item not yet in
//! the table: on its absence), so two invocations never both change a delegate: the loser gets
//! [`StoreError::Conflict`] and reads again. The lease is part of the item: taking it is such a
//! write, and while it runs nobody else starts changing the delegate in AWS.
//!
//! The transitions ([`Item::begin`], [`Item::commit`], [`Item::abandon`], [`Item::tombstone`])
//! are pure; [`Store`] only reads and writes.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::aws_error::AwsError;
use crate::image::{Follow, ImageUpgrade};
use crate::model::{string_enum, DelegateKey};
use crate::record::{On, Record};

/// The environment variable naming the table (set by template.yaml).
pub const TABLE_ENV: &str = "RECORD_TABLE";

/// How many answered requests an item remembers: enough for any redelivery CloudFormation makes
/// (a request and its rollback, retried), small enough to keep the item small.
const SERVED_KEPT: usize = 10;

/// How long a tombstone stays: CloudFormation redelivers for hours at most; days are safe.
pub const TOMBSTONE_SECONDS: u64 = 14 * 24 * 3600;

string_enum! {
    /// Where a delegate's record stands.
    pub enum State {
        /// An operation has started changing AWS and not finished: its changes are not the
        /// record; the committed configuration (if any) still is.
        Pending = "pending",
        /// The configuration the last successful operation asked for.
        Committed = "committed",
        /// The delegate was deleted (or never created): nothing is restored, and the requests
        /// it answered are remembered until the item expires.
        Deleted = "deleted",
    }
}

/// The stack resource a delegate belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// `arn:aws:cloudformation:REGION:ACCOUNT:stack/NAME/GUID`.
    pub stack_id: String,
    pub logical_id: String,
}

impl Owner {
    /// `<stack name>/<logical id>`: what tags and `HEAL_OWNER` show.
    pub fn label(&self) -> crate::model::OwnerLabel {
        crate::model::OwnerLabel::of(&self.stack_id, &self.logical_id)
    }
}

/// A request the item has answered, with the answer (JSON, as the pipeline wrote it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Served {
    pub request_id: String,
    pub answer: String,
}

/// Who may change the delegate until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The request (or heal) holding it.
    pub holder: String,
    /// Milliseconds since the epoch.
    pub until_ms: u64,
}

/// One delegate's item.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub key: DelegateKey,
    /// 0: not in the table yet.
    pub version: u64,
    pub state: State,
    pub owner: Option<Owner>,
    /// What heal restores: the last configuration an operation committed.
    pub committed: Option<Record>,
    /// The request whose operation is in progress (state `pending`).
    pub pending: Option<String>,
    pub served: Vec<Served>,
    pub lease: Option<Lease>,
    /// Epoch seconds after which DynamoDB may remove the item (tombstones only).
    pub expires_at: Option<u64>,
    /// When heal last forced a deployment, and of which committed revision: its back-off.
    pub redeployed: Option<Redeployed>,
    /// The security groups the function made for the delegate (their ids): the only groups it
    /// ever deletes as unused.
    pub groups_made: Vec<String>,
    /// The pending operation's wait for the delegate, when another invocation carries it on.
    pub waiting: Option<Waiting>,
    /// The last version an upgrade rolled back (`25.11.87300`): not tried again, by an upgrade
    /// run or a stack request, until Harness names a newer one.
    pub failed_version: Option<String>,
}

/// An operation whose changes are in place and whose wait for the delegate to be ready goes
/// on in another invocation: what that invocation needs, kept where only the function writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Waiting {
    /// The request that waits (and is answered when the wait ends).
    pub request_id: String,
    /// The configuration in place: committed when the delegate is ready.
    pub record: Record,
    /// The wait (JSON).
    pub wait: String,
    /// The answer's data when the delegate is ready (JSON).
    pub data: String,
}

/// The lease holder while a wait passes from one invocation to the next: the next takes the
/// lease from it (or once it expired), and nobody else may.
pub fn handoff_holder(operation: &str) -> String {
    format!("handoff:{operation}")
}

/// Heal's last forced deployment of a delegate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redeployed {
    /// Epoch seconds.
    pub at: u64,
    /// The committed revision (`family:revision`) it deployed.
    pub revision: String,
}

/// Why the lease cannot be taken now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub holder: String,
    pub until_ms: u64,
}

impl Item {
    /// A delegate the table has no item for.
    pub fn absent(key: DelegateKey) -> Self {
        Item {
            key,
            version: 0,
            state: State::Deleted,
            owner: None,
            committed: None,
            pending: None,
            served: vec![],
            lease: None,
            expires_at: None,
            redeployed: None,
            groups_made: vec![],
            waiting: None,
            failed_version: None,
        }
    }

    /// The delegate exists as far as the record goes: an operation created it (or is doing so).
    pub fn is_live(&self) -> bool {
        self.state != State::Deleted
    }

    /// The answer already given to `request_id`, if any.
    pub fn answer_to(&self, request_id: &str) -> Option<&str> {
        self.served
            .iter()
            .find(|s| s.request_id == request_id)
            .map(|s| s.answer.as_str())
    }

    /// Whether someone other than `holder` holds the lease at `now_ms`.
    pub fn held(&self, holder: &str, now_ms: u64) -> Option<Held> {
        self.lease
            .as_ref()
            .filter(|l| l.holder != holder && l.until_ms > now_ms)
            .map(|l| Held {
                holder: l.holder.clone(),
                until_ms: l.until_ms,
            })
    }

    /// Take the lease and mark the item pending for `holder`'s operation. The owner changes
    /// only when the operation commits; a tombstone's owner is history.
    pub fn begin(&self, holder: &str, until_ms: u64) -> Item {
        Item {
            version: self.version + 1,
            state: State::Pending,
            owner: self.owner.clone().filter(|_| self.is_live()),
            pending: Some(holder.to_string()),
            lease: Some(Lease {
                holder: holder.to_string(),
                until_ms,
            }),
            expires_at: None,
            waiting: None,
            ..self.clone()
        }
    }

    /// Take the lease without changing the state (heal: it repairs toward what is committed).
    pub fn lease_to(&self, holder: &str, until_ms: u64) -> Item {
        Item {
            version: self.version + 1,
            lease: Some(Lease {
                holder: holder.to_string(),
                until_ms,
            }),
            ..self.clone()
        }
    }

    /// The table holds the item, and the delegate is deleted.
    pub fn is_tombstone(&self) -> bool {
        self.version > 0 && !self.is_live()
    }

    /// When the delegate was deleted (epoch seconds), if its item is a tombstone.
    pub fn deleted_at(&self) -> Option<u64> {
        let expires = self.expires_at.filter(|_| self.is_tombstone())?;
        Some(expires.saturating_sub(TOMBSTONE_SECONDS))
    }

    /// When heal last made the service deploy `revision`, if it did.
    pub fn last_redeploy_of(&self, revision: &str) -> Option<u64> {
        self.redeployed
            .as_ref()
            .filter(|r| r.revision == revision)
            .map(|r| r.at)
    }

    /// Give the lease back, nothing else changed.
    pub fn release(&self) -> Item {
        Item {
            version: self.version + 1,
            lease: None,
            ..self.clone()
        }
    }

    /// The operation succeeded: `record` is the truth now, `owner` (if given) its owner; the
    /// lease is released. A group the record says the function made is remembered as its own.
    pub fn commit(&self, record: Record, owner: Option<Owner>) -> Item {
        let mut groups_made = self.groups_made.clone();
        let made = record
            .network
            .as_ref()
            .and_then(|n| n.managed_group.clone());
        groups_made.extend(made.filter(|id| !self.groups_made.contains(id)));
        Item {
            version: self.version + 1,
            state: State::Committed,
            owner: owner.or_else(|| self.owner.clone()),
            groups_made,
            committed: Some(record),
            pending: None,
            lease: None,
            expires_at: None,
            waiting: None,
            ..self.clone()
        }
    }

    /// The operation failed: what was committed before stays the truth (none: the delegate
    /// was never created, and the item is a tombstone); the lease is released.
    pub fn abandon(&self, now_s: u64) -> Item {
        match self.committed {
            Some(_) => Item {
                version: self.version + 1,
                state: State::Committed,
                pending: None,
                lease: None,
                waiting: None,
                ..self.clone()
            },
            None => self.tombstone(now_s, None),
        }
    }

    /// The delegate is deleted: nothing to restore. `holder` keeps the lease while the
    /// resources are removed; `None` releases it.
    pub fn tombstone(&self, now_s: u64, holder: Option<(&str, u64)>) -> Item {
        Item {
            version: self.version + 1,
            state: State::Deleted,
            committed: None,
            pending: None,
            waiting: None,
            lease: holder.map(|(h, until_ms)| Lease {
                holder: h.to_string(),
                until_ms,
            }),
            expires_at: Some(now_s + TOMBSTONE_SECONDS),
            ..self.clone()
        }
    }

    /// The pending operation's changes are in place and its wait goes on in another
    /// invocation: remember what that one needs, and hold the lease for it until `until_ms`.
    pub fn hand_on(&self, waiting: Waiting, until_ms: u64) -> Item {
        let operation = self.pending.clone().unwrap_or_default();
        Item {
            version: self.version + 1,
            lease: Some(Lease {
                holder: handoff_holder(&operation),
                until_ms,
            }),
            waiting: Some(waiting),
            ..self.clone()
        }
    }

    /// Remember the answer given to `request_id` (the newest [`SERVED_KEPT`]); `None`: there is
    /// nothing to remember (a direct request, whose id is new each time).
    pub fn serve(mut self, request_id: &str, answer: Option<String>) -> Item {
        let Some(answer) = answer else {
            return self;
        };
        self.served.retain(|s| s.request_id != request_id);
        self.served.push(Served {
            request_id: request_id.to_string(),
            answer,
        });
        let extra = self.served.len().saturating_sub(SERVED_KEPT);
        self.served.drain(..extra);
        self
    }

    fn to_attributes(&self) -> HashMap<String, AttributeValue> {
        let s = |v: &str| AttributeValue::S(v.to_string());
        let n = |v: u64| AttributeValue::N(v.to_string());
        let mut a = HashMap::from([
            ("delegate".to_string(), s(&self.key.to_string())),
            ("version".to_string(), n(self.version)),
            ("state".to_string(), s(self.state.as_str())),
        ]);
        if let Some(o) = &self.owner {
            a.insert("owner_stack_id".into(), s(&o.stack_id));
            a.insert("owner_logical_id".into(), s(&o.logical_id));
        }
        if let Some(r) = &self.committed {
            let tags = r.all_tags(On::Service).into_iter();
            a.insert(
                "committed".into(),
                AttributeValue::M(tags.map(|(k, v)| (k, s(&v))).collect()),
            );
            if let Some(f) = &r.follow {
                a.insert("committed_image".into(), follow_attribute(f));
            }
        }
        if let Some(v) = &self.failed_version {
            a.insert("upgrade_failed".into(), s(v));
        }
        if let Some(p) = &self.pending {
            a.insert("pending_request".into(), s(p));
        }
        if !self.served.is_empty() {
            let served = self.served.iter().map(|x| {
                AttributeValue::M(HashMap::from([
                    ("request_id".to_string(), s(&x.request_id)),
                    ("answer".to_string(), s(&x.answer)),
                ]))
            });
            a.insert("served".into(), AttributeValue::L(served.collect()));
        }
        if let Some(l) = &self.lease {
            a.insert("lease_holder".into(), s(&l.holder));
            a.insert("lease_until_ms".into(), n(l.until_ms));
        }
        if let Some(t) = self.expires_at {
            a.insert(EXPIRES_AT.into(), n(t));
        }
        if !self.groups_made.is_empty() {
            a.insert(
                "groups_made".into(),
                AttributeValue::Ss(self.groups_made.clone()),
            );
        }
        if let Some(r) = &self.redeployed {
            a.insert("redeployed_at".into(), n(r.at));
            a.insert("redeployed_revision".into(), s(&r.revision));
        }
        if let Some(w) = &self.waiting {
            let record = w.record.all_tags(On::Service).into_iter();
            let mut m = HashMap::from([
                ("request_id".to_string(), s(&w.request_id)),
                ("wait".to_string(), s(&w.wait)),
                ("data".to_string(), s(&w.data)),
                (
                    "record".to_string(),
                    AttributeValue::M(record.map(|(k, v)| (k, s(&v))).collect()),
                ),
            ]);
            if let Some(f) = &w.record.follow {
                m.insert("image".to_string(), follow_attribute(f));
            }
            a.insert("waiting".into(), AttributeValue::M(m));
        }
        a
    }

    fn from_attributes(a: &HashMap<String, AttributeValue>) -> Result<Item, String> {
        let text = |k: &str| a.get(k).and_then(|v| v.as_s().ok()).cloned();
        let number = |k: &str| a.get(k).and_then(|v| v.as_n().ok()?.parse::<u64>().ok());
        let key = text("delegate")
            .and_then(|k| DelegateKey::parse(&k))
            .ok_or("no delegate key")?;
        let state = text("state")
            .and_then(|s| State::parse(&s))
            .ok_or("no state")?;
        let committed = match a.get("committed").and_then(|v| v.as_m().ok()) {
            None => None,
            Some(m) => Some(Record {
                follow: follow_from(a.get("committed_image"))?,
                ..record_from(m)?
            }),
        };
        let waiting = match a.get("waiting").and_then(|v| v.as_m().ok()) {
            None => None,
            Some(m) => Some(waiting_from(m)?),
        };
        let served = a
            .get("served")
            .and_then(|v| v.as_l().ok())
            .map(|l| {
                l.iter()
                    .filter_map(|x| {
                        let m = x.as_m().ok()?;
                        Some(Served {
                            request_id: m.get("request_id")?.as_s().ok()?.clone(),
                            answer: m.get("answer")?.as_s().ok()?.clone(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Item {
            key,
            version: number("version").ok_or("no version")?,
            state,
            owner: text("owner_stack_id").map(|stack_id| Owner {
                stack_id,
                logical_id: text("owner_logical_id").unwrap_or_default(),
            }),
            committed,
            pending: text("pending_request"),
            served,
            lease: text("lease_holder").map(|holder| Lease {
                holder,
                until_ms: number("lease_until_ms").unwrap_or(0),
            }),
            expires_at: number(EXPIRES_AT),
            groups_made: a
                .get("groups_made")
                .and_then(|v| v.as_ss().ok())
                .cloned()
                .unwrap_or_default(),
            redeployed: number("redeployed_at").map(|at| Redeployed {
                at,
                revision: text("redeployed_revision").unwrap_or_default(),
            }),
            waiting,
            failed_version: text("upgrade_failed"),
        })
    }
}

/// What a record's image follows, as a map of its own.
fn follow_attribute(f: &Follow) -> AttributeValue {
    let s = |v: &str| AttributeValue::S(v.to_string());
    AttributeValue::M(HashMap::from([
        ("upgrade".to_string(), s(f.upgrade.as_str())),
        ("api_key_secret".to_string(), s(&f.api_key_secret)),
        ("manager".to_string(), s(&f.manager)),
        ("account_id".to_string(), s(&f.account_id)),
        ("repository".to_string(), s(&f.repository)),
        ("minimal".to_string(), AttributeValue::Bool(f.minimal)),
        ("image".to_string(), s(&f.image)),
    ]))
}

fn follow_from(v: Option<&AttributeValue>) -> Result<Option<Follow>, String> {
    let Some(v) = v else { return Ok(None) };
    let m = v.as_m().map_err(|_| "an image setting that is not a map")?;
    let text = |k: &str| {
        m.get(k)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .ok_or(format!("an image setting without {k}"))
    };
    Ok(Some(Follow {
        upgrade: ImageUpgrade::parse(&text("upgrade")?).ok_or("an unknown ImageUpgrade")?,
        api_key_secret: text("api_key_secret")?,
        manager: text("manager")?,
        account_id: text("account_id")?,
        repository: text("repository")?,
        minimal: m
            .get("minimal")
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false),
        image: text("image")?,
    }))
}

fn record_from(m: &HashMap<String, AttributeValue>) -> Result<Record, String> {
    let tags: BTreeMap<String, String> = m
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_s().ok()?.clone())))
        .collect();
    match Record::from_tags(&tags, None) {
        Some(Ok(r)) => Ok(r),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("a configuration without its time".into()),
    }
}

fn waiting_from(m: &HashMap<String, AttributeValue>) -> Result<Waiting, String> {
    let text = |k: &str| {
        m.get(k)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .ok_or(format!("a wait without {k}"))
    };
    let record = m
        .get("record")
        .and_then(|v| v.as_m().ok())
        .ok_or("a wait without its configuration")?;
    Ok(Waiting {
        request_id: text("request_id")?,
        record: Record {
            follow: follow_from(m.get("image"))?,
            ..record_from(record)?
        },
        wait: text("wait")?,
        data: text("data")?,
    })
}

/// The TTL attribute (template.yaml's `TimeToLiveSpecification`).
pub const EXPIRES_AT: &str = "expires_at";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{TABLE_ENV} is not set: the function keeps each delegate's record in a DynamoDB table (template.yaml creates it); set {TABLE_ENV} to its name")]
    NoTable,
    /// Someone else changed the item since it was read.
    #[error("the record of {key} changed while this operation ran (another invocation acted on the delegate)")]
    Conflict { key: DelegateKey },
    #[error("the record of {key} in table {table} is unreadable ({what}): it was not written by this version of the function. Remove the OnlyTheFunctionWrites statement from the table's resource policy (a stack update), delete the item, put the statement back and run a stack Update")]
    Unreadable {
        key: String,
        table: String,
        what: String,
    },
    #[error("the record store: {0}")]
    Aws(#[from] AwsError),
}

/// The table, and the client that reaches it.
#[derive(Clone, Debug)]
pub struct Store {
    pub client: aws_sdk_dynamodb::Client,
    /// `None`: [`TABLE_ENV`] was not set; any use says so.
    pub table: Option<String>,
}

impl Store {
    pub fn new(config: &aws_config::SdkConfig, table: Option<String>) -> Self {
        Store {
            client: aws_sdk_dynamodb::Client::new(config),
            table,
        }
    }

    /// The table named by [`TABLE_ENV`].
    pub fn table_from_env() -> Option<String> {
        std::env::var(TABLE_ENV)
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
    }

    fn table(&self) -> Result<&str, StoreError> {
        self.table.as_deref().ok_or(StoreError::NoTable)
    }

    /// The delegate's item, read consistently; [`Item::absent`] when there is none.
    pub async fn get(&self, key: &DelegateKey) -> Result<Item, StoreError> {
        let table = self.table()?;
        let out = self
            .client
            .get_item()
            .table_name(table)
            .key("delegate", AttributeValue::S(key.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| AwsError::new("dynamodb:GetItem", e))?;
        match out.item() {
            None => Ok(Item::absent(key.clone())),
            Some(a) => self.read(a),
        }
    }

    fn read(&self, a: &HashMap<String, AttributeValue>) -> Result<Item, StoreError> {
        Item::from_attributes(a).map_err(|what| StoreError::Unreadable {
            key: a
                .get("delegate")
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default(),
            table: self.table.clone().unwrap_or_default(),
            what,
        })
    }

    /// Write `item` if the table still holds version `item.version - 1` (or no item, for 1).
    pub async fn put(&self, item: &Item) -> Result<(), StoreError> {
        let table = self.table()?;
        let mut req = self
            .client
            .put_item()
            .table_name(table)
            .set_item(Some(item.to_attributes()));
        req = match item.version.saturating_sub(1) {
            0 => req.condition_expression("attribute_not_exists(delegate)"),
            v => req
                .condition_expression("version = :v")
                .expression_attribute_values(":v", AttributeValue::N(v.to_string())),
        };
        let req = req.return_values_on_condition_check_failure(
            aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure::AllOld,
        );
        match req.send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let Some(failed) = e.as_service_error().and_then(|se| match se {
                    PutItemError::ConditionalCheckFailedException(c) => Some(c),
                    _ => None,
                }) else {
                    return Err(AwsError::new("dynamodb:PutItem", e).into());
                };
                // A retried put whose first attempt landed finds its own item: that is success.
                let now = failed.item().and_then(|a| Item::from_attributes(a).ok());
                if now.as_ref() == Some(item) {
                    return Ok(());
                }
                Err(StoreError::Conflict {
                    key: item.key.clone(),
                })
            }
        }
    }

    /// Every item, read consistently, page by page.
    pub async fn all(&self) -> Result<Vec<Result<Item, StoreError>>, StoreError> {
        let table = self.table()?;
        let pages = self
            .client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .into_paginator()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|e| AwsError::new("dynamodb:Scan", e))?;
        Ok(pages
            .iter()
            .flat_map(|p| p.items())
            .map(|a| self.read(a))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LaunchType, NetworkMode};

    fn record() -> Record {
        Record {
            key: DelegateKey::new("prod", "harness-delegate"),
            owner: Some(crate::model::OwnerLabel::from_tag("stack/Delegate")),
            owner_stack_id: None,
            launch_type: LaunchType::Ec2,
            network_mode: NetworkMode::Bridge,
            desired_count: 1,
            task_definition: "fam:3".into(),
            network: None,
            applied_at: 1_000,
            user_tags: BTreeMap::new(),
            follow: Some(crate::image::Follow {
                upgrade: ImageUpgrade::LatestSupported,
                api_key_secret: "arn:aws:secretsmanager:us-east-1:1:secret:k".into(),
                manager: "https://app.harness.io/gratis".into(),
                account_id: "acct".into(),
                repository: "harness/delegate".into(),
                minimal: true,
                image: "harness/delegate:25.10.87100.minimal".into(),
            }),
        }
    }

    fn owner(guid: &str) -> Owner {
        Owner {
            stack_id: format!("arn:aws:cloudformation:us-east-1:1:stack/stack/{guid}"),
            logical_id: "Delegate".into(),
        }
    }

    #[test]
    fn an_item_survives_its_attributes() {
        let key = DelegateKey::new("prod", "harness-delegate");
        let item = Item::absent(key)
            .begin("req-1", 5_000)
            .commit(record(), Some(owner("g1")))
            .serve("req-1", Some("{\"Status\":\"SUCCESS\"}".into()))
            .lease_to("heal", 9_000);
        let item = Item {
            groups_made: vec!["sg-1".into(), "sg-2".into()],
            redeployed: Some(Redeployed {
                at: 77,
                revision: "fam:3".into(),
            }),
            failed_version: Some("25.11.87300".into()),
            ..item
        };
        assert_eq!(item.last_redeploy_of("fam:3"), Some(77));
        assert_eq!(
            item.last_redeploy_of("fam:4"),
            None,
            "a newer configuration"
        );
        let back = Item::from_attributes(&item.to_attributes()).unwrap();
        assert_eq!(back, item);
        let gone = item.tombstone(100, Some(("req-2", 7_000)));
        let back = Item::from_attributes(&gone.to_attributes()).unwrap();
        assert_eq!(back, gone);
        assert_eq!(back.expires_at, Some(100 + TOMBSTONE_SECONDS));
        assert_eq!(back.answer_to("req-1"), Some("{\"Status\":\"SUCCESS\"}"));

        // A wait handed on keeps what the next invocation needs; ending the operation drops it.
        let waiting = Waiting {
            request_id: "req-3".into(),
            record: record(),
            wait: "{\"ready_by_ms\":1}".into(),
            data: "{\"ServiceArn\":\"arn\"}".into(),
        };
        let handed = item
            .begin("req-3-op", 8_000)
            .hand_on(waiting.clone(), 9_000);
        assert_eq!(
            handed.lease.as_ref().unwrap().holder,
            handoff_holder("req-3-op")
        );
        let back = Item::from_attributes(&handed.to_attributes()).unwrap();
        assert_eq!(back, handed);
        assert_eq!(back.waiting, Some(waiting));
        assert_eq!(handed.commit(record(), None).waiting, None);
        assert_eq!(handed.abandon(1).waiting, None);
        assert_eq!(handed.begin("req-4", 1).waiting, None, "a newer operation");
    }

    #[test]
    fn transitions() {
        let key = DelegateKey::new("prod", "d");
        let begun = Item::absent(key).begin("req-1", 5_000);
        assert_eq!((begun.version, begun.state), (1, State::Pending));
        // The lease keeps others out until it expires, not its holder.
        assert_eq!(begun.held("req-1", 1_000), None);
        assert!(begun.held("heal", 1_000).is_some());
        assert_eq!(begun.held("heal", 5_000), None);
        // A failed first operation leaves a tombstone: nothing for heal to restore.
        let failed = begun.abandon(10);
        assert_eq!(
            (failed.state, failed.committed.is_none()),
            (State::Deleted, true)
        );
        let done = begun.commit(record(), Some(owner("g1")));
        assert_eq!(
            (done.version, done.state, done.lease.clone()),
            (2, State::Committed, None)
        );
        // A later failure keeps what was committed.
        let again = done.begin("req-2", 9_000).abandon(10);
        assert_eq!(again.committed, Some(record()));
        assert_eq!(again.state, State::Committed);
        assert_eq!(again.owner, Some(owner("g1")));
    }

    #[test]
    fn only_the_newest_answers_are_kept() {
        let mut item = Item::absent(DelegateKey::new("c", "s"));
        for i in 0..15 {
            item = item.serve(&format!("r{i}"), Some(i.to_string()));
        }
        assert_eq!(item.served.len(), SERVED_KEPT);
        assert_eq!(item.answer_to("r4"), None);
        assert_eq!(item.answer_to("r14"), Some("14"));
        // Answering again replaces, not duplicates.
        let item = item.serve("r14", Some("x".into()));
        assert_eq!(item.clone().serve("r15", None), item, "nothing to remember");
        assert_eq!(item.served.len(), SERVED_KEPT);
        assert_eq!(item.answer_to("r14"), Some("x"));
    }
}
