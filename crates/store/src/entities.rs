//! Tenants, services (with versions), consumers and subscriptions, plus the change feed.
//! Every read and write but tenant creation is scoped to a tenant, so one tenant's admin can
//! never see or touch another's data.

use async_trait::async_trait;

use crate::db::{col, Row, SqlStore, Stmt, Value, CHANGES_CHANNEL};
use crate::error::StoreError;
use crate::model::*;

/// Tenants, services, consumers and subscriptions.
#[async_trait]
pub trait EntityStore {
    async fn create_tenant(&self, name: &str) -> Result<Tenant, StoreError>;
    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError>;
    /// One tenant; `NotFound` when it does not exist.
    async fn get_tenant(&self, name: &str) -> Result<Tenant, StoreError>;
    /// Delete a tenant. With services or consumers left it is a `Conflict` unless `force`,
    /// which deletes them too (with their versions, keys and subscriptions) in one transaction.
    async fn delete_tenant(&self, name: &str, force: bool) -> Result<(), StoreError>;
    async fn create_service(&self, service: &Service) -> Result<Service, StoreError>;
    async fn list_services(&self, tenant: Option<&str>) -> Result<Vec<Service>, StoreError>;
    async fn get_service(&self, tenant: &str, name: &str) -> Result<Service, StoreError>;
    /// Change a service's `require_approval` and/or limits (`None`: unchanged).
    async fn update_service(
        &self,
        tenant: &str,
        name: &str,
        require_approval: Option<bool>,
        limits: Option<&Limits>,
    ) -> Result<Service, StoreError>;
    /// Delete a service with its versions and the subscriptions to it.
    async fn delete_service(&self, tenant: &str, name: &str) -> Result<(), StoreError>;
    /// Add a version or change its lifecycle state.
    async fn set_version_state(
        &self,
        tenant: &str,
        service: &str,
        version: &str,
        state: Lifecycle,
        sunset_ms: Option<i64>,
    ) -> Result<Service, StoreError>;
    async fn create_consumer(&self, consumer: &Consumer) -> Result<Consumer, StoreError>;
    async fn list_consumers(&self, tenant: Option<&str>) -> Result<Vec<Consumer>, StoreError>;
    async fn get_consumer(&self, tenant: &str, name: &str) -> Result<Consumer, StoreError>;
    /// Replace a consumer's limits.
    async fn update_consumer(
        &self,
        tenant: &str,
        name: &str,
        limits: &Limits,
    ) -> Result<Consumer, StoreError>;
    /// Delete a consumer with its API keys and subscriptions.
    async fn delete_consumer(&self, tenant: &str, name: &str) -> Result<(), StoreError>;
    /// Subscribe; pending when the service requires approval, else active at once.
    async fn subscribe(
        &self,
        tenant: &str,
        consumer: &str,
        service: &str,
    ) -> Result<Subscription, StoreError>;
    async fn list_subscriptions(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<Subscription>, StoreError>;
    /// Approve (`true`) or reject a pending subscription. A decided one is a `Conflict`.
    async fn decide_subscription(
        &self,
        tenant: &str,
        id: i64,
        approve: bool,
    ) -> Result<Subscription, StoreError>;
    /// Delete a subscription (the consumer may then subscribe again).
    async fn delete_subscription(&self, tenant: &str, id: i64) -> Result<(), StoreError>;
    /// Everything the request path needs, in one go.
    async fn snapshot(&self) -> Result<Snapshot, StoreError>;
}

/// The generation counter: bumped by every change, read by every node when it is told of a
/// change (PostgreSQL `NOTIFY` on [`CHANGES_CHANNEL`], see [`SqlStore::listen`]) and polled
/// as a fallback.
#[async_trait]
pub trait ChangeFeed {
    async fn generation(&self) -> Result<i64, StoreError>;
    /// Count a change; on PostgreSQL, also announce it to every listening node.
    async fn bump(&self) -> Result<(), StoreError>;
}

#[async_trait]
impl ChangeFeed for SqlStore {
    async fn generation(&self) -> Result<i64, StoreError> {
        let rows = self
            .query("SELECT v FROM meta WHERE k = 'generation'", vec![])
            .await?;
        rows.first()
            .and_then(|r| col(r, 0).int())
            .ok_or_else(|| StoreError::Corrupt("meta.generation is missing".into()))
    }
    async fn bump(&self) -> Result<(), StoreError> {
        if self.is_postgres() {
            // One statement: the notification (payload: the new generation) is sent when the
            // update commits.
            self.execute(
                &format!("WITH g AS (UPDATE meta SET v = v + 1 WHERE k = 'generation' RETURNING v) SELECT pg_notify('{CHANGES_CHANNEL}', v::text) FROM g"),
                vec![],
            )
            .await?;
        } else {
            self.execute("UPDATE meta SET v = v + 1 WHERE k = 'generation'", vec![])
                .await?;
        }
        Ok(())
    }
}

impl SqlStore {
    /// The generation bump of [`ChangeFeed::bump`], as a statement of an atomic write.
    pub(crate) fn bump_stmt(&self) -> Stmt {
        if self.is_postgres() {
            Stmt::new(
                format!("WITH g AS (UPDATE meta SET v = v + 1 WHERE k = 'generation' RETURNING v) SELECT pg_notify('{CHANGES_CHANNEL}', v::text) FROM g"),
                vec![],
            )
        } else {
            Stmt::new("UPDATE meta SET v = v + 1 WHERE k = 'generation'", vec![])
        }
    }
}

fn text(row: &Row, i: usize) -> Result<String, StoreError> {
    col(row, i)
        .text()
        .ok_or_else(|| StoreError::Corrupt(format!("column {i} is not text")))
}

fn int(row: &Row, i: usize) -> Result<i64, StoreError> {
    col(row, i)
        .int()
        .ok_or_else(|| StoreError::Corrupt(format!("column {i} is not an integer")))
}

fn conflict_or(e: StoreError, what: String) -> StoreError {
    if e.is_unique_violation() {
        StoreError::Conflict(what)
    } else {
        e
    }
}

/// Run the deletion transaction `stmts` builds, again (3 runs in all) when PostgreSQL refused
/// it for a foreign key: a row naming what it deletes (a subscription or a version of the
/// service, a service of the tenant) was added by a concurrent write between its statements,
/// and the next run deletes that row too instead of failing the deletion.
async fn delete_with_dependents(
    store: &SqlStore,
    stmts: impl Fn() -> Vec<Stmt>,
) -> Result<(), StoreError> {
    let mut runs = 0;
    loop {
        runs += 1;
        match store.atomic(stmts()).await {
            Err(e) if runs < 3 && e.is_foreign_key_violation() => continue,
            result => return result.map(|_| ()),
        }
    }
}

/// A write refused because the service it names was deleted meanwhile (PostgreSQL's foreign
/// key): the service is not found, as it would have been a moment later.
fn service_gone_or(e: StoreError, service: &str, tenant: &str) -> StoreError {
    if e.is_foreign_key_violation() {
        StoreError::NotFound(format!("service `{service}` in tenant `{tenant}`"))
    } else {
        e
    }
}

async fn require_tenant(store: &SqlStore, tenant: &str) -> Result<(), StoreError> {
    let rows = store
        .query(
            "SELECT name FROM tenants WHERE name = $1",
            vec![tenant.into()],
        )
        .await?;
    if rows.is_empty() {
        return Err(StoreError::NotFound(format!("tenant {tenant}")));
    }
    Ok(())
}

const SUB_COLS: &str = "id, tenant, consumer, service, state, created_ms, decided_ms";

fn subscription(row: &Row) -> Result<Subscription, StoreError> {
    Ok(Subscription {
        id: int(row, 0)?,
        tenant: text(row, 1)?,
        consumer: text(row, 2)?,
        service: text(row, 3)?,
        state: SubscriptionState::parse(&text(row, 4)?)
            .ok_or_else(|| StoreError::Corrupt("subscription state".into()))?,
        created_ms: int(row, 5)?,
        decided_ms: col(row, 6).int(),
    })
}

fn consumer(row: &Row) -> Result<Consumer, StoreError> {
    Ok(Consumer {
        tenant: text(row, 0)?,
        name: text(row, 1)?,
        limits: Limits::from_json(&text(row, 2)?)?,
        created_ms: int(row, 3)?,
    })
}

impl SqlStore {
    async fn load_services(&self, tenant: Option<&str>) -> Result<Vec<Service>, StoreError> {
        let (filter, params) = match tenant {
            Some(t) => ("WHERE tenant = $1", vec![Value::from(t)]),
            None => ("", vec![]),
        };
        let rows = self
            .query(
                &format!("SELECT name, tenant, require_approval, limits, created_ms FROM services {filter} ORDER BY name"),
                params.clone(),
            )
            .await?;
        let versions = self
            .query(
                &format!("SELECT v.service, v.version, v.state, v.state_since_ms, v.sunset_ms FROM service_versions v JOIN services s ON s.name = v.service {} ORDER BY v.service, v.version",
                    filter.replace("tenant", "s.tenant")),
                params,
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let name = text(row, 0)?;
            let mut vs = Vec::new();
            for v in versions
                .iter()
                .filter(|v| col(v, 0).text().as_deref() == Some(&name))
            {
                vs.push(ServiceVersion {
                    version: text(v, 1)?,
                    state: Lifecycle::parse(&text(v, 2)?)
                        .ok_or_else(|| StoreError::Corrupt("lifecycle state".into()))?,
                    since_ms: col(v, 3).int(),
                    sunset_ms: col(v, 4).int(),
                });
            }
            vs.sort_by(|a, b| compare_versions(&a.version, &b.version));
            out.push(Service {
                name,
                tenant: text(row, 1)?,
                require_approval: int(row, 2)? != 0,
                limits: Limits::from_json(&text(row, 3)?)?,
                versions: vs,
                created_ms: int(row, 4)?,
            });
        }
        Ok(out)
    }
}

#[async_trait]
impl EntityStore for SqlStore {
    async fn create_tenant(&self, name: &str) -> Result<Tenant, StoreError> {
        validate_name("name", name)?;
        let t = Tenant {
            name: name.to_string(),
            created_ms: now_ms(),
        };
        self.execute(
            "INSERT INTO tenants (name, created_ms) VALUES ($1, $2)",
            vec![name.into(), t.created_ms.into()],
        )
        .await
        .map_err(|e| conflict_or(e, format!("tenant `{name}` already exists")))?;
        self.bump().await?;
        Ok(t)
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows = self
            .query("SELECT name, created_ms FROM tenants ORDER BY name", vec![])
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Tenant {
                    name: text(r, 0)?,
                    created_ms: int(r, 1)?,
                })
            })
            .collect()
    }

    async fn get_tenant(&self, name: &str) -> Result<Tenant, StoreError> {
        let rows = self
            .query(
                "SELECT name, created_ms FROM tenants WHERE name = $1",
                vec![name.into()],
            )
            .await?;
        let row = rows
            .first()
            .ok_or_else(|| StoreError::NotFound(format!("tenant {name}")))?;
        Ok(Tenant {
            name: text(row, 0)?,
            created_ms: int(row, 1)?,
        })
    }

    async fn delete_tenant(&self, name: &str, force: bool) -> Result<(), StoreError> {
        self.get_tenant(name).await?;
        let t = || vec![Value::from(name)];
        if !force {
            let count = |sql: &'static str| async move {
                let rows = self.query(sql, vec![Value::from(name)]).await?;
                Ok::<i64, StoreError>(rows.first().and_then(|r| col(r, 0).int()).unwrap_or(0))
            };
            let ns = count("SELECT COUNT(*) FROM services WHERE tenant = $1").await?;
            let nc = count("SELECT COUNT(*) FROM consumers WHERE tenant = $1").await?;
            if ns + nc > 0 {
                return Err(StoreError::Conflict(format!(
                    "tenant `{name}` still has {ns} service(s) and {nc} consumer(s): delete them first, or delete with ?force=true to delete them (and their keys and subscriptions) too"
                )));
            }
        }
        // Consumers first, as in `delete_consumer`: their rows are locked (PostgreSQL) before
        // the keys and subscriptions that name them are removed.
        delete_with_dependents(self, || vec![
            Stmt::new("DELETE FROM consumers WHERE tenant = $1", t()),
            Stmt::new("DELETE FROM api_keys WHERE tenant = $1", t()),
            Stmt::new("DELETE FROM subscriptions WHERE tenant = $1", t()),
            Stmt::new(
                "DELETE FROM subscriptions WHERE service IN (SELECT name FROM services WHERE tenant = $1)",
                t(),
            ),
            Stmt::new(
                "DELETE FROM service_versions WHERE service IN (SELECT name FROM services WHERE tenant = $1)",
                t(),
            ),
            Stmt::new("DELETE FROM services WHERE tenant = $1", t()),
            Stmt::new("DELETE FROM tenants WHERE name = $1", t())
                .or_fail(StoreError::NotFound(format!("tenant {name}"))),
            self.bump_stmt(),
        ])
        .await
    }

    async fn create_service(&self, s: &Service) -> Result<Service, StoreError> {
        validate_name("name", &s.name)?;
        s.limits.validate("limits")?;
        for (i, v) in s.versions.iter().enumerate() {
            let field = format!("versions[{i}].version");
            validate_name(&field, &v.version)?;
            validate_sunset(&format!("versions[{i}].sunset_ms"), v.sunset_ms)?;
            if let Some(j) = s.versions[..i].iter().position(|w| w.version == v.version) {
                return Err(StoreError::Invalid {
                    field,
                    message: format!(
                        "version `{}` is listed twice (also versions[{j}])",
                        v.version
                    ),
                });
            }
        }
        require_tenant(self, &s.tenant).await?;
        let created_ms = now_ms();
        let mut stmts = vec![Stmt::new(
            "INSERT INTO services (name, tenant, require_approval, limits, created_ms) VALUES ($1, $2, $3, $4, $5)",
            vec![s.name.as_str().into(), s.tenant.as_str().into(), s.require_approval.into(), s.limits.to_json().into(), created_ms.into()],
        )];
        for v in &s.versions {
            stmts.push(Stmt::new(
                "INSERT INTO service_versions (service, version, state, state_since_ms, sunset_ms) VALUES ($1, $2, $3, $4, $5)",
                vec![
                    s.name.as_str().into(),
                    v.version.as_str().into(),
                    v.state.as_str().into(),
                    created_ms.into(),
                    v.sunset_ms.into(),
                ],
            ));
        }
        stmts.push(self.bump_stmt());
        self.atomic(stmts)
            .await
            .map_err(|e| conflict_or(e, format!("a service named `{}` already exists", s.name)))?;
        self.get_service(&s.tenant, &s.name).await
    }

    async fn list_services(&self, tenant: Option<&str>) -> Result<Vec<Service>, StoreError> {
        self.load_services(tenant).await
    }

    async fn get_service(&self, tenant: &str, name: &str) -> Result<Service, StoreError> {
        self.load_services(Some(tenant))
            .await?
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| StoreError::NotFound(format!("service `{name}` in tenant `{tenant}`")))
    }

    async fn update_service(
        &self,
        tenant: &str,
        name: &str,
        require_approval: Option<bool>,
        limits: Option<&Limits>,
    ) -> Result<Service, StoreError> {
        if let Some(l) = limits {
            l.validate("limits")?;
        }
        let current = self.get_service(tenant, name).await?;
        let approval = require_approval.unwrap_or(current.require_approval);
        let limits = limits.unwrap_or(&current.limits);
        self.atomic(vec![
            Stmt::new(
                "UPDATE services SET require_approval = $3, limits = $4 WHERE tenant = $1 AND name = $2",
                vec![tenant.into(), name.into(), approval.into(), limits.to_json().into()],
            )
            .or_fail(StoreError::NotFound(format!("service `{name}` in tenant `{tenant}`"))),
            self.bump_stmt(),
        ])
        .await?;
        self.get_service(tenant, name).await
    }

    async fn delete_service(&self, tenant: &str, name: &str) -> Result<(), StoreError> {
        let p = || vec![Value::from(tenant), Value::from(name)];
        delete_with_dependents(self, || vec![
            Stmt::new(
                "DELETE FROM subscriptions WHERE service = $2 AND EXISTS (SELECT 1 FROM services WHERE tenant = $1 AND name = $2)",
                p(),
            ),
            Stmt::new(
                "DELETE FROM service_versions WHERE service = $2 AND EXISTS (SELECT 1 FROM services WHERE tenant = $1 AND name = $2)",
                p(),
            ),
            Stmt::new("DELETE FROM services WHERE tenant = $1 AND name = $2", p()).or_fail(
                StoreError::NotFound(format!("service `{name}` in tenant `{tenant}`")),
            ),
            self.bump_stmt(),
        ])
        .await
    }

    async fn set_version_state(
        &self,
        tenant: &str,
        service: &str,
        version: &str,
        state: Lifecycle,
        sunset_ms: Option<i64>,
    ) -> Result<Service, StoreError> {
        validate_name("version", version)?;
        validate_sunset("sunset_ms", sunset_ms)?;
        self.get_service(tenant, service).await?;
        let now = now_ms();
        // The time of a state it already has is kept.
        let n = self
            .execute(
                "UPDATE service_versions SET state_since_ms = CASE WHEN state = $3 THEN state_since_ms ELSE $4 END, state = $3, sunset_ms = $5 WHERE service = $1 AND version = $2",
                vec![service.into(), version.into(), state.as_str().into(), now.into(), sunset_ms.into()],
            )
            .await?;
        if n == 0 {
            // Only while the service exists: SQLite does not enforce the foreign key, so a
            // deletion that lands between the check above and this insert would otherwise
            // leave a version row without its service.
            let inserted = self
                .execute(
                    "INSERT INTO service_versions (service, version, state, state_since_ms, sunset_ms) SELECT $1, $2, $3, $5, $6 WHERE EXISTS (SELECT 1 FROM services WHERE name = $1 AND tenant = $4)",
                    vec![service.into(), version.into(), state.as_str().into(), tenant.into(), now.into(), sunset_ms.into()],
                )
                .await
                .map_err(|e| service_gone_or(e, service, tenant))?;
            if inserted == 0 {
                return Err(StoreError::NotFound(format!(
                    "service `{service}` in tenant `{tenant}`"
                )));
            }
        }
        self.bump().await?;
        self.get_service(tenant, service).await
    }

    async fn create_consumer(&self, c: &Consumer) -> Result<Consumer, StoreError> {
        validate_name("name", &c.name)?;
        c.limits.validate("limits")?;
        require_tenant(self, &c.tenant).await?;
        let created_ms = now_ms();
        self.execute(
            "INSERT INTO consumers (tenant, name, limits, created_ms) VALUES ($1, $2, $3, $4)",
            vec![
                c.tenant.as_str().into(),
                c.name.as_str().into(),
                c.limits.to_json().into(),
                created_ms.into(),
            ],
        )
        .await
        .map_err(|e| conflict_or(e, format!("consumer `{}` already exists", c.name)))?;
        self.bump().await?;
        Ok(Consumer {
            created_ms,
            ..c.clone()
        })
    }

    async fn list_consumers(&self, tenant: Option<&str>) -> Result<Vec<Consumer>, StoreError> {
        let (filter, params) = match tenant {
            Some(t) => ("WHERE tenant = $1", vec![Value::from(t)]),
            None => ("", vec![]),
        };
        let rows = self
            .query(
                &format!("SELECT tenant, name, limits, created_ms FROM consumers {filter} ORDER BY tenant, name"),
                params,
            )
            .await?;
        rows.iter().map(consumer).collect()
    }

    async fn get_consumer(&self, tenant: &str, name: &str) -> Result<Consumer, StoreError> {
        let rows = self
            .query(
                "SELECT tenant, name, limits, created_ms FROM consumers WHERE tenant = $1 AND name = $2",
                vec![tenant.into(), name.into()],
            )
            .await?;
        rows.first().map(consumer).unwrap_or_else(|| {
            Err(StoreError::NotFound(format!(
                "consumer `{name}` in tenant `{tenant}`"
            )))
        })
    }

    async fn update_consumer(
        &self,
        tenant: &str,
        name: &str,
        limits: &Limits,
    ) -> Result<Consumer, StoreError> {
        limits.validate("limits")?;
        self.atomic(vec![
            Stmt::new(
                "UPDATE consumers SET limits = $3 WHERE tenant = $1 AND name = $2",
                vec![tenant.into(), name.into(), limits.to_json().into()],
            )
            .or_fail(StoreError::NotFound(format!(
                "consumer `{name}` in tenant `{tenant}`"
            ))),
            self.bump_stmt(),
        ])
        .await?;
        self.get_consumer(tenant, name).await
    }

    async fn delete_consumer(&self, tenant: &str, name: &str) -> Result<(), StoreError> {
        let p = || vec![Value::from(tenant), Value::from(name)];
        // The consumer row goes first: on PostgreSQL that locks it, so a key or subscription
        // being added at the same moment either committed before (and is deleted below, each
        // statement seeing what committed before it) or waits and then finds no consumer.
        self.atomic(vec![
            Stmt::new("DELETE FROM consumers WHERE tenant = $1 AND name = $2", p()).or_fail(
                StoreError::NotFound(format!("consumer `{name}` in tenant `{tenant}`")),
            ),
            Stmt::new(
                "DELETE FROM api_keys WHERE tenant = $1 AND consumer = $2",
                p(),
            ),
            Stmt::new(
                "DELETE FROM subscriptions WHERE tenant = $1 AND consumer = $2",
                p(),
            ),
            self.bump_stmt(),
        ])
        .await?;
        Ok(())
    }

    async fn subscribe(
        &self,
        tenant: &str,
        consumer_name: &str,
        service: &str,
    ) -> Result<Subscription, StoreError> {
        let svc = self.get_service(tenant, service).await?;
        let state = if svc.require_approval {
            SubscriptionState::Pending
        } else {
            SubscriptionState::Active
        };
        let now = now_ms();
        let decided: Option<i64> = (!svc.require_approval).then_some(now);
        let rows = self
            .query(
                // Inserts only while the consumer exists (and, on PostgreSQL, keeps it from
                // being deleted until this commits): a consumer deleted at the same moment is
                // never left with a subscription that a new consumer of its name would inherit.
                &format!(
                    "INSERT INTO subscriptions (tenant, consumer, service, state, created_ms, decided_ms) SELECT CAST($1 AS TEXT), CAST($2 AS TEXT), CAST($3 AS TEXT), CAST($4 AS TEXT), CAST($5 AS BIGINT), CAST($6 AS BIGINT) WHERE EXISTS (SELECT 1 FROM consumers WHERE tenant = $1 AND name = $2{}) RETURNING {SUB_COLS}",
                    self.lock_for_key_share()
                ),
                vec![tenant.into(), consumer_name.into(), service.into(), state.as_str().into(), now.into(), decided.into()],
            )
            .await;
        let rows = match rows {
            Err(e) if e.is_unique_violation() => {
                return Err(StoreError::Conflict(
                    self.existing_subscription(tenant, consumer_name, service)
                        .await,
                ))
            }
            other => other.map_err(|e| service_gone_or(e, service, tenant))?,
        };
        let Some(row) = rows.first() else {
            return Err(StoreError::NotFound(format!(
                "consumer `{consumer_name}` in tenant `{tenant}`"
            )));
        };
        self.bump().await?;
        subscription(row)
    }

    async fn list_subscriptions(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<Subscription>, StoreError> {
        let (filter, params) = match tenant {
            Some(t) => ("WHERE tenant = $1", vec![Value::from(t)]),
            None => ("", vec![]),
        };
        let rows = self
            .query(
                &format!("SELECT {SUB_COLS} FROM subscriptions {filter} ORDER BY id"),
                params,
            )
            .await?;
        rows.iter().map(subscription).collect()
    }

    async fn decide_subscription(
        &self,
        tenant: &str,
        id: i64,
        approve: bool,
    ) -> Result<Subscription, StoreError> {
        let state = if approve {
            SubscriptionState::Active
        } else {
            SubscriptionState::Rejected
        };
        let not_found = || StoreError::NotFound(format!("subscription {id} in tenant `{tenant}`"));
        let load = || async {
            let rows = self
                .query(
                    &format!("SELECT {SUB_COLS} FROM subscriptions WHERE tenant = $1 AND id = $2"),
                    vec![tenant.into(), id.into()],
                )
                .await?;
            rows.first()
                .map(subscription)
                .unwrap_or_else(|| Err(not_found()))
        };
        let current = load().await?;
        if current.state != SubscriptionState::Pending {
            return Err(StoreError::Conflict(format!(
                "subscription {id} is already {}: only a pending subscription can be approved or rejected (to decide again, delete the subscription and subscribe again)",
                current.state.as_str()
            )));
        }
        self.atomic(vec![
            Stmt::new(
                "UPDATE subscriptions SET state = $3, decided_ms = $4 WHERE tenant = $1 AND id = $2 AND state = 'pending'",
                vec![tenant.into(), id.into(), state.as_str().into(), now_ms().into()],
            )
            .or_fail(StoreError::Conflict(format!(
                "subscription {id} was decided meanwhile"
            ))),
            self.bump_stmt(),
        ])
        .await?;
        load().await
    }

    async fn delete_subscription(&self, tenant: &str, id: i64) -> Result<(), StoreError> {
        self.atomic(vec![
            Stmt::new(
                "DELETE FROM subscriptions WHERE tenant = $1 AND id = $2",
                vec![tenant.into(), id.into()],
            )
            .or_fail(StoreError::NotFound(format!(
                "subscription {id} in tenant `{tenant}`"
            ))),
            self.bump_stmt(),
        ])
        .await?;
        Ok(())
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        let generation = self.generation().await?;
        Ok(Snapshot {
            generation,
            services: self.load_services(None).await?,
            consumers: self.list_consumers(None).await?,
            keys: crate::keys::load_keys(self, None).await?,
            subscriptions: self.list_subscriptions(None).await?,
        })
    }
}

impl SqlStore {
    /// Why a consumer cannot subscribe again: the subscription it has, by state and id.
    async fn existing_subscription(&self, tenant: &str, consumer: &str, service: &str) -> String {
        let found = self
            .query(
                "SELECT id, state FROM subscriptions WHERE tenant = $1 AND consumer = $2 AND service = $3",
                vec![tenant.into(), consumer.into(), service.into()],
            )
            .await
            .ok()
            .and_then(|rows| rows.into_iter().next())
            .and_then(|row| Some((col(&row, 0).int()?, col(&row, 1).text()?)));
        match found {
            Some((id, state)) if state == SubscriptionState::Rejected.as_str() => format!(
                "the subscription of `{consumer}` to `{service}` (id {id}) was rejected: delete subscription {id} to ask again (API: `DELETE /admin/tenants/{tenant}/subscriptions/{id}`; CLI: `holdfast admin unsubscribe {id}`)"
            ),
            Some((id, state)) if state == SubscriptionState::Pending.as_str() => format!(
                "`{consumer}` already asked to subscribe to `{service}` (subscription {id}, waiting for approval by a tenant admin)"
            ),
            Some((id, _)) => {
                format!("`{consumer}` is already subscribed to `{service}` (subscription {id})")
            }
            None => format!("`{consumer}` is already subscribed to `{service}`"),
        }
    }
}
