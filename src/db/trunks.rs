//! SIP trunks: where calls go (a PBX or carrier), how to reach it and how to authenticate.

use super::{
    CodecList, Credential, Database, DbError, Host, HostPort, Name, Password, StoredRow, Timestamp,
    Transport, is_unique_violation, with_pool,
};

/// A trunk's primary key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrunkId(pub i64);

/// Digest-authentication credentials for a trunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkAuth {
    /// The username.
    pub username: Credential,
    /// The password (masked in `Debug`).
    pub password: Password,
    /// The realm to answer; any realm the trunk challenges with when absent.
    pub realm: Option<Credential>,
}

/// A stored trunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trunk {
    /// Primary key.
    pub id: TrunkId,
    /// Unique name.
    pub name: Name,
    /// The PBX or carrier.
    pub host: Host,
    /// Its SIP port.
    pub port: u16,
    /// SIP transport toward it.
    pub transport: Transport,
    /// Where to send requests instead of `host:port`, when set.
    pub outbound_proxy: Option<HostPort>,
    /// Credentials for digest challenges, when the trunk asks for them.
    pub auth: Option<TrunkAuth>,
    /// Whether callgate registers with the trunk.
    pub register: bool,
    /// Requested registration lifetime in seconds (60 to 86400).
    pub register_expiry: u32,
    /// Codecs offered, most preferred first.
    pub codecs: CodecList,
    /// Failover order: lower is tried first.
    pub priority: u16,
    /// Whether calls may use the trunk.
    pub enabled: bool,
    /// When it was added.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// A trunk to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTrunk {
    /// Unique name.
    pub name: Name,
    /// The PBX or carrier.
    pub host: Host,
    /// Its SIP port.
    pub port: u16,
    /// SIP transport toward it.
    pub transport: Transport,
    /// Where to send requests instead, when set.
    pub outbound_proxy: Option<HostPort>,
    /// Credentials for digest challenges.
    pub auth: Option<TrunkAuth>,
    /// Whether to register with the trunk.
    pub register: bool,
    /// Registration lifetime in seconds (60 to 86400).
    pub register_expiry: u32,
    /// Codecs offered, most preferred first.
    pub codecs: CodecList,
    /// Failover order: lower is tried first.
    pub priority: u16,
    /// Whether calls may use the trunk.
    pub enabled: bool,
}

/// The registration lifetime asked for unless told otherwise (the RFC 3261 default).
pub const DEFAULT_REGISTER_EXPIRY: u32 = 3600;

impl NewTrunk {
    /// A trunk to `host` with the defaults: UDP on 5060, no proxy, no credentials, not registering,
    /// PCMU then PCMA, priority 0, enabled.
    pub fn new(name: Name, host: Host) -> Self {
        Self {
            name,
            host,
            port: Transport::Udp.default_port(),
            transport: Transport::Udp,
            outbound_proxy: None,
            auth: None,
            register: false,
            register_expiry: DEFAULT_REGISTER_EXPIRY,
            codecs: CodecList::default(),
            priority: 0,
            enabled: true,
        }
    }
}

/// Changes to a trunk: `None` leaves a field as it is; for optional fields `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrunkChanges {
    /// New host.
    pub host: Option<Host>,
    /// New port.
    pub port: Option<u16>,
    /// New transport.
    pub transport: Option<Transport>,
    /// New outbound proxy, or none.
    pub outbound_proxy: Option<Option<HostPort>>,
    /// New credentials (all three fields replaced together), or none.
    pub auth: Option<Option<TrunkAuth>>,
    /// Register or not.
    pub register: Option<bool>,
    /// New registration lifetime.
    pub register_expiry: Option<u32>,
    /// New codec preference.
    pub codecs: Option<CodecList>,
    /// New failover priority.
    pub priority: Option<u16>,
    /// Enable or disable.
    pub enabled: Option<bool>,
}

/// What `remove` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedTrunk {
    /// Widgets that used the trunk: now without a trunk and disabled (only with `force`).
    pub disabled_widgets: Vec<Name>,
}

/// The trunk repository; get one from [`Database::trunks`].
#[derive(Debug, Clone, Copy)]
pub struct Trunks<'a> {
    database: &'a Database,
}

/// `SELECT` of every trunk column, followed by the rest of the query.
macro_rules! select_trunks {
    ($rest:literal) => {
        concat!(
            "SELECT id, name, host, port, transport, outbound_proxy, auth_username, auth_password, auth_realm, \
             register, register_expiry, codecs, priority, enabled, created_at, updated_at FROM trunks ",
            $rest
        )
    };
}

impl<'a> Trunks<'a> {
    pub(super) fn new(database: &'a Database) -> Self {
        Self { database }
    }

    /// Adds a trunk; [`DbError::DuplicateTrunk`] when the name is taken.
    pub async fn add(&self, trunk: NewTrunk) -> Result<Trunk, DbError> {
        let now = Timestamp::now();
        let row = TrunkRow::from_new(&trunk, now);
        let inserted = with_pool!(self.database, |pool| {
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO trunks (name, host, port, transport, outbound_proxy, auth_username, auth_password, \
                 auth_realm, register, register_expiry, codecs, priority, enabled, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING id",
            )
            .bind(&row.name)
            .bind(&row.host)
            .bind(row.port)
            .bind(&row.transport)
            .bind(&row.outbound_proxy)
            .bind(&row.auth_username)
            .bind(&row.auth_password)
            .bind(&row.auth_realm)
            .bind(row.register)
            .bind(row.register_expiry)
            .bind(&row.codecs)
            .bind(row.priority)
            .bind(row.enabled)
            .bind(row.created_at)
            .bind(row.updated_at)
            .fetch_one(pool)
            .await
        });
        match inserted {
            Ok(id) => TrunkRow { id, ..row }.try_into(),
            Err(error) if is_unique_violation(&error) => Err(DbError::DuplicateTrunk(trunk.name)),
            Err(error) => Err(error.into()),
        }
    }

    /// Every trunk, in failover order: by priority, then by name.
    pub async fn list(&self) -> Result<Vec<Trunk>, DbError> {
        let rows: Vec<TrunkRow> = with_pool!(self.database, |pool| {
            sqlx::query_as(select_trunks!("ORDER BY priority, name"))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(Trunk::try_from).collect()
    }

    /// The trunk named `name`; [`DbError::TrunkNotFound`] when there is none.
    pub async fn by_name(&self, name: &Name) -> Result<Trunk, DbError> {
        let row: Option<TrunkRow> = with_pool!(self.database, |pool| {
            sqlx::query_as(select_trunks!("WHERE name = $1"))
                .bind(name.as_str())
                .fetch_optional(pool)
                .await?
        });
        row.ok_or_else(|| DbError::TrunkNotFound(name.clone()))?
            .try_into()
    }

    /// Applies `changes` to the trunk named `name` and returns the result.
    pub async fn update(&self, name: &Name, changes: TrunkChanges) -> Result<Trunk, DbError> {
        let row = with_pool!(self.database, |pool| {
            let mut transaction = pool.begin().await?;
            let current: TrunkRow = sqlx::query_as(select_trunks!("WHERE name = $1"))
                .bind(name.as_str())
                .fetch_optional(&mut *transaction)
                .await?
                .ok_or_else(|| DbError::TrunkNotFound(name.clone()))?;
            let updated = apply_changes(Trunk::try_from(current)?, changes);
            let row = TrunkRow::from_trunk(&updated);
            sqlx::query(
                "UPDATE trunks SET host = $2, port = $3, transport = $4, outbound_proxy = $5, \
                 auth_username = $6, auth_password = $7, auth_realm = $8, register = $9, register_expiry = $10, \
                 codecs = $11, priority = $12, enabled = $13, updated_at = $14 WHERE id = $1",
            )
            .bind(row.id)
            .bind(&row.host)
            .bind(row.port)
            .bind(&row.transport)
            .bind(&row.outbound_proxy)
            .bind(&row.auth_username)
            .bind(&row.auth_password)
            .bind(&row.auth_realm)
            .bind(row.register)
            .bind(row.register_expiry)
            .bind(&row.codecs)
            .bind(row.priority)
            .bind(row.enabled)
            .bind(row.updated_at)
            .execute(&mut *transaction)
            .await?;
            transaction.commit().await?;
            row
        });
        row.try_into()
    }

    /// Removes the trunk named `name`. While widgets use it the removal is refused with
    /// [`DbError::TrunkInUse`] naming them, unless `force`: then those widgets are disabled and left without
    /// a trunk (in the same transaction), and their names are returned.
    pub async fn remove(&self, name: &Name, force: bool) -> Result<RemovedTrunk, DbError> {
        let widget_names: Vec<String> = with_pool!(self.database, |pool| {
            let mut transaction = pool.begin().await?;
            let id: i64 = sqlx::query_scalar("SELECT id FROM trunks WHERE name = $1")
                .bind(name.as_str())
                .fetch_optional(&mut *transaction)
                .await?
                .ok_or_else(|| DbError::TrunkNotFound(name.clone()))?;
            let widget_names: Vec<String> =
                sqlx::query_scalar("SELECT name FROM widgets WHERE trunk_id = $1 ORDER BY name")
                    .bind(id)
                    .fetch_all(&mut *transaction)
                    .await?;
            if !widget_names.is_empty() && !force {
                // Dropping the transaction rolls it back; nothing was written.
                let widgets = widget_names.iter().filter_map(|name| name.parse().ok()).collect();
                return Err(DbError::TrunkInUse {
                    trunk: name.clone(),
                    widgets,
                });
            }
            sqlx::query("UPDATE widgets SET enabled = FALSE, updated_at = $2 WHERE trunk_id = $1")
                .bind(id)
                .bind(Timestamp::now().unix_millis())
                .execute(&mut *transaction)
                .await?;
            // ON DELETE SET NULL detaches the widgets.
            sqlx::query("DELETE FROM trunks WHERE id = $1")
                .bind(id)
                .execute(&mut *transaction)
                .await?;
            transaction.commit().await?;
            widget_names
        });
        let disabled_widgets = widget_names.iter().filter_map(|name| name.parse().ok()).collect();
        Ok(RemovedTrunk { disabled_widgets })
    }
}

fn apply_changes(trunk: Trunk, changes: TrunkChanges) -> Trunk {
    Trunk {
        host: changes.host.unwrap_or(trunk.host),
        port: changes.port.unwrap_or(trunk.port),
        transport: changes.transport.unwrap_or(trunk.transport),
        outbound_proxy: changes.outbound_proxy.unwrap_or(trunk.outbound_proxy),
        auth: changes.auth.unwrap_or(trunk.auth),
        register: changes.register.unwrap_or(trunk.register),
        register_expiry: changes.register_expiry.unwrap_or(trunk.register_expiry),
        codecs: changes.codecs.unwrap_or(trunk.codecs),
        priority: changes.priority.unwrap_or(trunk.priority),
        enabled: changes.enabled.unwrap_or(trunk.enabled),
        updated_at: Timestamp::now(),
        ..trunk
    }
}

/// A `trunks` row as stored. No `Debug`: it holds the password in the clear.
#[derive(sqlx::FromRow)]
struct TrunkRow {
    id: i64,
    name: String,
    host: String,
    port: i64,
    transport: String,
    outbound_proxy: Option<String>,
    auth_username: Option<String>,
    auth_password: Option<String>,
    auth_realm: Option<String>,
    register: bool,
    register_expiry: i64,
    codecs: String,
    priority: i64,
    enabled: bool,
    created_at: i64,
    updated_at: i64,
}

impl TrunkRow {
    fn from_new(trunk: &NewTrunk, now: Timestamp) -> Self {
        Self {
            id: 0,
            name: trunk.name.to_string(),
            host: trunk.host.to_string(),
            port: trunk.port.into(),
            transport: trunk.transport.to_string(),
            outbound_proxy: trunk.outbound_proxy.as_ref().map(ToString::to_string),
            auth_username: trunk.auth.as_ref().map(|auth| auth.username.to_string()),
            auth_password: trunk.auth.as_ref().map(|auth| auth.password.expose().to_owned()),
            auth_realm: trunk
                .auth
                .as_ref()
                .and_then(|auth| auth.realm.as_ref().map(ToString::to_string)),
            register: trunk.register,
            register_expiry: trunk.register_expiry.into(),
            codecs: trunk.codecs.to_string(),
            priority: trunk.priority.into(),
            enabled: trunk.enabled,
            created_at: now.unix_millis(),
            updated_at: now.unix_millis(),
        }
    }

    fn from_trunk(trunk: &Trunk) -> Self {
        let new = NewTrunk {
            name: trunk.name.clone(),
            host: trunk.host.clone(),
            port: trunk.port,
            transport: trunk.transport,
            outbound_proxy: trunk.outbound_proxy.clone(),
            auth: trunk.auth.clone(),
            register: trunk.register,
            register_expiry: trunk.register_expiry,
            codecs: trunk.codecs.clone(),
            priority: trunk.priority,
            enabled: trunk.enabled,
        };
        Self {
            id: trunk.id.0,
            created_at: trunk.created_at.unix_millis(),
            ..Self::from_new(&new, trunk.updated_at)
        }
    }
}

impl TryFrom<TrunkRow> for Trunk {
    type Error = DbError;

    fn try_from(row: TrunkRow) -> Result<Self, DbError> {
        let stored = StoredRow {
            table: "trunks",
            id: row.id,
        };
        let auth = match (row.auth_username, row.auth_password) {
            (Some(username), Some(password)) => Some(TrunkAuth {
                username: stored.text("auth_username", &username)?,
                // Not through `text`: its message would quote the password.
                password: password
                    .parse()
                    .map_err(|_| stored.corrupt("auth_password", "not a valid password".to_owned()))?,
                realm: stored.optional_text("auth_realm", row.auth_realm.as_deref())?,
            }),
            _ => None,
        };
        Ok(Self {
            id: TrunkId(row.id),
            name: stored.text("name", &row.name)?,
            host: stored.text("host", &row.host)?,
            port: stored.integer("port", row.port)?,
            transport: stored.text("transport", &row.transport)?,
            outbound_proxy: stored.optional_text("outbound_proxy", row.outbound_proxy.as_deref())?,
            auth,
            register: row.register,
            register_expiry: stored.integer("register_expiry", row.register_expiry)?,
            codecs: stored.text("codecs", &row.codecs)?,
            priority: stored.integer("priority", row.priority)?,
            enabled: row.enabled,
            created_at: Timestamp::from_unix_millis(row.created_at),
            updated_at: Timestamp::from_unix_millis(row.updated_at),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{NewWidget, on_both_backends};

    fn name(text: &str) -> Name {
        text.parse().unwrap()
    }

    fn authenticated_trunk() -> NewTrunk {
        NewTrunk {
            port: 5080,
            transport: Transport::Tcp,
            outbound_proxy: Some("[2001:db8::1]:5070".parse().unwrap()),
            auth: Some(TrunkAuth {
                username: "gw".parse().unwrap(),
                password: "s3cret".parse().unwrap(),
                realm: Some("pbx.example".parse().unwrap()),
            }),
            register: true,
            register_expiry: 600,
            codecs: "pcma,pcmu".parse().unwrap(),
            priority: 7,
            ..NewTrunk::new(name("main"), "pbx.example".parse().unwrap())
        }
    }

    async fn add_widget(database: &Database, widget: &str, trunk: &str) {
        let origins = "https://shop.example".parse().unwrap();
        let new = NewWidget::new(name(widget), name(trunk), "100".parse().unwrap(), origins);
        database.widgets().add(new).await.unwrap();
    }

    async fn every_field_round_trips(database: &Database) {
        let added = database.trunks().add(authenticated_trunk()).await.unwrap();
        let fetched = database.trunks().by_name(&name("main")).await.unwrap();
        assert_eq!(added, fetched);
        let NewTrunk {
            name,
            host,
            port,
            transport,
            outbound_proxy,
            auth,
            register,
            register_expiry,
            codecs,
            priority,
            enabled,
        } = authenticated_trunk();
        let expected = Trunk {
            id: fetched.id,
            created_at: fetched.created_at,
            updated_at: fetched.created_at,
            name,
            host,
            port,
            transport,
            outbound_proxy,
            auth,
            register,
            register_expiry,
            codecs,
            priority,
            enabled,
        };
        assert_eq!(fetched, expected);
    }

    async fn list_is_in_failover_order(database: &Database) {
        for (trunk, priority) in [("b", 1), ("c", 0), ("a", 1)] {
            let new = NewTrunk {
                priority,
                ..NewTrunk::new(name(trunk), "pbx.example".parse().unwrap())
            };
            database.trunks().add(new).await.unwrap();
        }
        let names: Vec<String> = database
            .trunks()
            .list()
            .await
            .unwrap()
            .iter()
            .map(|trunk| trunk.name.to_string())
            .collect();
        assert_eq!(names, ["c", "a", "b"]);
    }

    async fn duplicate_and_unknown_names_are_refused(database: &Database) {
        database.trunks().add(authenticated_trunk()).await.unwrap();
        let before = database.trunks().list().await.unwrap();
        let duplicate = NewTrunk::new(name("main"), "other.example".parse().unwrap());
        let error = database.trunks().add(duplicate).await.unwrap_err();
        assert!(
            matches!(&error, DbError::DuplicateTrunk(trunk) if trunk.as_str() == "main"),
            "{error}"
        );
        assert_eq!(database.trunks().list().await.unwrap(), before);
        let missing = name("missing");
        assert!(matches!(
            database.trunks().by_name(&missing).await,
            Err(DbError::TrunkNotFound(_))
        ));
        let error = database
            .trunks()
            .update(&missing, TrunkChanges::default())
            .await
            .unwrap_err();
        assert!(matches!(error, DbError::TrunkNotFound(_)));
        assert!(matches!(
            database.trunks().remove(&missing, true).await,
            Err(DbError::TrunkNotFound(_))
        ));
    }

    async fn update_changes_only_what_is_given(database: &Database) {
        let added = database.trunks().add(authenticated_trunk()).await.unwrap();
        let changes = TrunkChanges {
            host: Some("10.0.0.2".parse().unwrap()),
            outbound_proxy: Some(None),
            auth: Some(None),
            enabled: Some(false),
            ..TrunkChanges::default()
        };
        let updated = database.trunks().update(&name("main"), changes).await.unwrap();
        let expected = Trunk {
            host: "10.0.0.2".parse().unwrap(),
            outbound_proxy: None,
            auth: None,
            enabled: false,
            updated_at: updated.updated_at,
            ..added.clone()
        };
        assert_eq!(updated, expected);
        assert!(updated.updated_at >= added.updated_at);
        assert_eq!(database.trunks().by_name(&name("main")).await.unwrap(), updated);
    }

    async fn removing_a_trunk_in_use_is_refused_unless_forced(database: &Database) {
        database.trunks().add(authenticated_trunk()).await.unwrap();
        database
            .trunks()
            .add(NewTrunk::new(name("spare"), "spare.example".parse().unwrap()))
            .await
            .unwrap();
        add_widget(database, "shop", "main").await;
        add_widget(database, "blog", "main").await;
        add_widget(database, "other", "spare").await;
        let trunks_before = database.trunks().list().await.unwrap();
        let widgets_before = database.widgets().list().await.unwrap();

        let error = database.trunks().remove(&name("main"), false).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "trunk 'main' is used by widgets: blog, shop; remove them, move them to another trunk, or use --force"
        );
        assert_eq!(database.trunks().list().await.unwrap(), trunks_before);
        assert_eq!(database.widgets().list().await.unwrap(), widgets_before);

        let removed = database.trunks().remove(&name("main"), true).await.unwrap();
        assert_eq!(removed.disabled_widgets, [name("blog"), name("shop")]);
        assert!(matches!(
            database.trunks().by_name(&name("main")).await,
            Err(DbError::TrunkNotFound(_))
        ));
        for orphan in ["blog", "shop"] {
            let widget = database.widgets().by_name(&name(orphan)).await.unwrap();
            assert_eq!((widget.trunk, widget.enabled), (None, false));
        }
        let untouched = database.widgets().by_name(&name("other")).await.unwrap();
        assert!(untouched.enabled);
        assert_eq!(untouched.trunk.map(|trunk| trunk.name), Some(name("spare")));

        let refused = database.trunks().remove(&name("spare"), false).await;
        assert!(matches!(refused, Err(DbError::TrunkInUse { .. })));
        database.widgets().remove(&name("other")).await.unwrap();
        let removed = database.trunks().remove(&name("spare"), false).await.unwrap();
        assert!(removed.disabled_widgets.is_empty());
        assert!(database.trunks().list().await.unwrap().is_empty());
    }

    on_both_backends!(
        every_field_round_trips,
        list_is_in_failover_order,
        duplicate_and_unknown_names_are_refused,
        update_changes_only_what_is_given,
        removing_a_trunk_in_use_is_refused_unless_forced,
    );
}
