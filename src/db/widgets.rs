//! Widgets: a click-to-call button on a website, bound to one trunk and one destination.

use super::{
    CallerId, Database, DbError, Destination, Name, Origins, PublicId, StoredRow, Timestamp, TrunkId,
    WidgetSecret, is_unique_violation, with_pool,
};

/// A widget's primary key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WidgetId(pub i64);

/// The trunk a widget calls through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WidgetTrunk {
    /// The trunk's primary key.
    pub id: TrunkId,
    /// The trunk's name.
    pub name: Name,
}

/// A stored widget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Widget {
    /// Primary key.
    pub id: WidgetId,
    /// Random id the website's embed code carries.
    pub public_id: PublicId,
    /// Unique name.
    pub name: Name,
    /// The trunk calls go through; `None` after `trunk remove --force` removed it (the widget is then
    /// disabled).
    pub trunk: Option<WidgetTrunk>,
    /// What the widget calls; the browser cannot choose another.
    pub destination: Destination,
    /// Websites allowed to use the widget.
    pub origins: Origins,
    /// Caller id presented to the PBX; the trunk's default when absent.
    pub caller_id: Option<CallerId>,
    /// Calls allowed at the same time.
    pub max_concurrent: u32,
    /// Calls allowed to start per minute.
    pub max_per_minute: u32,
    /// Secret for signed tokens; a call needs a valid token when set.
    pub secret: Option<WidgetSecret>,
    /// Whether the widget accepts calls.
    pub enabled: bool,
    /// When it was added.
    pub created_at: Timestamp,
    /// When it last changed.
    pub updated_at: Timestamp,
}

/// The concurrent-call limit unless told otherwise.
pub const DEFAULT_MAX_CONCURRENT: u32 = 5;
/// The calls-per-minute limit unless told otherwise.
pub const DEFAULT_MAX_PER_MINUTE: u32 = 10;

/// A widget to add.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWidget {
    /// Unique name.
    pub name: Name,
    /// The trunk to call through, by name.
    pub trunk: Name,
    /// What the widget calls.
    pub destination: Destination,
    /// Websites allowed to use it.
    pub origins: Origins,
    /// Caller id to present.
    pub caller_id: Option<CallerId>,
    /// Calls allowed at the same time (at least 1).
    pub max_concurrent: u32,
    /// Calls allowed to start per minute (at least 1).
    pub max_per_minute: u32,
    /// Whether calls need a signed token (a secret is generated).
    pub require_token: bool,
    /// Whether the widget accepts calls.
    pub enabled: bool,
}

impl NewWidget {
    /// A widget with the defaults: no caller id, the default limits, no token, enabled.
    pub fn new(name: Name, trunk: Name, destination: Destination, origins: Origins) -> Self {
        Self {
            name,
            trunk,
            destination,
            origins,
            caller_id: None,
            max_concurrent: DEFAULT_MAX_CONCURRENT,
            max_per_minute: DEFAULT_MAX_PER_MINUTE,
            require_token: false,
            enabled: true,
        }
    }
}

/// What to do with a widget's token secret.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SecretChange {
    /// Leave it as it is.
    #[default]
    Keep,
    /// Require tokens: keep the secret if there is one, else generate one.
    Require,
    /// Require tokens with a new secret; tokens signed with the old one stop working.
    Rotate,
    /// Stop requiring tokens and forget the secret.
    Remove,
}

/// Changes to a widget: `None` leaves a field as it is; for optional fields `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WidgetChanges {
    /// New trunk, by name.
    pub trunk: Option<Name>,
    /// New destination.
    pub destination: Option<Destination>,
    /// New origins (replacing the list).
    pub origins: Option<Origins>,
    /// New caller id, or none.
    pub caller_id: Option<Option<CallerId>>,
    /// New concurrent-call limit (at least 1).
    pub max_concurrent: Option<u32>,
    /// New calls-per-minute limit (at least 1).
    pub max_per_minute: Option<u32>,
    /// Token secret change.
    pub secret: SecretChange,
    /// Enable or disable.
    pub enabled: Option<bool>,
}

/// The widget repository; get one from [`Database::widgets`].
#[derive(Debug, Clone, Copy)]
pub struct Widgets<'a> {
    database: &'a Database,
}

/// `SELECT` of every widget column plus its trunk's name, followed by the rest of the query.
macro_rules! select_widgets {
    ($rest:literal) => {
        concat!(
            "SELECT w.id, w.public_id, w.name, w.trunk_id, t.name AS trunk_name, w.destination, w.origins, \
             w.caller_id, w.max_concurrent, w.max_per_minute, w.secret, w.enabled, w.created_at, w.updated_at \
             FROM widgets w LEFT JOIN trunks t ON t.id = w.trunk_id ",
            $rest
        )
    };
}

impl<'a> Widgets<'a> {
    pub(super) fn new(database: &'a Database) -> Self {
        Self { database }
    }

    /// Adds a widget with a fresh public id (and secret, when tokens are required);
    /// [`DbError::TrunkNotFound`] or [`DbError::DuplicateWidget`] when the names do not fit.
    pub async fn add(&self, widget: NewWidget) -> Result<Widget, DbError> {
        let now = Timestamp::now().unix_millis();
        let public_id = PublicId::generate();
        let secret = widget.require_token.then(WidgetSecret::generate);
        let id = with_pool!(self.database, |pool| {
            let mut transaction = pool.begin().await?;
            let trunk_id: i64 = sqlx::query_scalar("SELECT id FROM trunks WHERE name = $1")
                .bind(widget.trunk.as_str())
                .fetch_optional(&mut *transaction)
                .await?
                .ok_or_else(|| DbError::TrunkNotFound(widget.trunk.clone()))?;
            let inserted = sqlx::query_scalar::<_, i64>(
                "INSERT INTO widgets (public_id, name, trunk_id, destination, origins, caller_id, max_concurrent, \
                 max_per_minute, secret, enabled, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) RETURNING id",
            )
            .bind(public_id.as_str())
            .bind(widget.name.as_str())
            .bind(trunk_id)
            .bind(widget.destination.as_str())
            .bind(widget.origins.to_string())
            .bind(widget.caller_id.as_ref().map(CallerId::as_str))
            .bind(i64::from(widget.max_concurrent))
            .bind(i64::from(widget.max_per_minute))
            .bind(secret.as_ref().map(WidgetSecret::expose))
            .bind(widget.enabled)
            .bind(now)
            .fetch_one(&mut *transaction)
            .await;
            let id = match inserted {
                Ok(id) => id,
                Err(error) if is_unique_violation(&error) => {
                    return Err(DbError::DuplicateWidget(widget.name));
                }
                Err(error) => return Err(error.into()),
            };
            transaction.commit().await?;
            id
        });
        self.by_id(WidgetId(id)).await
    }

    /// Every widget, by name.
    pub async fn list(&self) -> Result<Vec<Widget>, DbError> {
        let rows: Vec<WidgetRow> = with_pool!(self.database, |pool| {
            sqlx::query_as(select_widgets!("ORDER BY w.name"))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(Widget::try_from).collect()
    }

    /// The widget named `name`; [`DbError::WidgetNotFound`] when there is none.
    pub async fn by_name(&self, name: &Name) -> Result<Widget, DbError> {
        let row: Option<WidgetRow> = with_pool!(self.database, |pool| {
            sqlx::query_as(select_widgets!("WHERE w.name = $1"))
                .bind(name.as_str())
                .fetch_optional(pool)
                .await?
        });
        row.ok_or_else(|| DbError::WidgetNotFound(name.clone()))?
            .try_into()
    }

    /// The widget a website's embed code names; [`DbError::PublicIdNotFound`] when there is none.
    pub async fn by_public_id(&self, public_id: &PublicId) -> Result<Widget, DbError> {
        let row: Option<WidgetRow> = with_pool!(self.database, |pool| {
            sqlx::query_as(select_widgets!("WHERE w.public_id = $1"))
                .bind(public_id.as_str())
                .fetch_optional(pool)
                .await?
        });
        row.ok_or_else(|| DbError::PublicIdNotFound(public_id.clone()))?
            .try_into()
    }

    async fn by_id(&self, id: WidgetId) -> Result<Widget, DbError> {
        let row: WidgetRow = with_pool!(self.database, |pool| {
            sqlx::query_as(select_widgets!("WHERE w.id = $1"))
                .bind(id.0)
                .fetch_one(pool)
                .await?
        });
        row.try_into()
    }

    /// Applies `changes` to the widget named `name` and returns the result. Refuses
    /// ([`DbError::WidgetWithoutTrunk`]) to leave a widget enabled without a trunk.
    pub async fn update(&self, name: &Name, changes: WidgetChanges) -> Result<Widget, DbError> {
        let id = with_pool!(self.database, |pool| {
            let mut transaction = pool.begin().await?;
            let current: Widget = sqlx::query_as::<_, WidgetRow>(select_widgets!("WHERE w.name = $1"))
                .bind(name.as_str())
                .fetch_optional(&mut *transaction)
                .await?
                .ok_or_else(|| DbError::WidgetNotFound(name.clone()))?
                .try_into()?;
            let trunk_id = match &changes.trunk {
                Some(trunk) => Some(
                    sqlx::query_scalar::<_, i64>("SELECT id FROM trunks WHERE name = $1")
                        .bind(trunk.as_str())
                        .fetch_optional(&mut *transaction)
                        .await?
                        .ok_or_else(|| DbError::TrunkNotFound(trunk.clone()))?,
                ),
                None => current.trunk.as_ref().map(|trunk| trunk.id.0),
            };
            let enabled = changes.enabled.unwrap_or(current.enabled);
            if enabled && trunk_id.is_none() {
                return Err(DbError::WidgetWithoutTrunk(name.clone()));
            }
            let secret = match changes.secret {
                SecretChange::Keep => current.secret,
                SecretChange::Require => current.secret.or_else(|| Some(WidgetSecret::generate())),
                SecretChange::Rotate => Some(WidgetSecret::generate()),
                SecretChange::Remove => None,
            };
            let destination = changes.destination.unwrap_or(current.destination);
            let origins = changes.origins.unwrap_or(current.origins);
            let caller_id = changes.caller_id.unwrap_or(current.caller_id);
            sqlx::query(
                "UPDATE widgets SET trunk_id = $2, destination = $3, origins = $4, caller_id = $5, \
                 max_concurrent = $6, max_per_minute = $7, secret = $8, enabled = $9, updated_at = $10 \
                 WHERE id = $1",
            )
            .bind(current.id.0)
            .bind(trunk_id)
            .bind(destination.as_str())
            .bind(origins.to_string())
            .bind(caller_id.as_ref().map(CallerId::as_str))
            .bind(i64::from(
                changes.max_concurrent.unwrap_or(current.max_concurrent),
            ))
            .bind(i64::from(
                changes.max_per_minute.unwrap_or(current.max_per_minute),
            ))
            .bind(secret.as_ref().map(WidgetSecret::expose))
            .bind(enabled)
            .bind(Timestamp::now().unix_millis())
            .execute(&mut *transaction)
            .await?;
            transaction.commit().await?;
            current.id
        });
        self.by_id(id).await
    }

    /// Removes the widget named `name`. Its call records stay (they keep the widget's name).
    pub async fn remove(&self, name: &Name) -> Result<(), DbError> {
        let removed = with_pool!(self.database, |pool| {
            sqlx::query("DELETE FROM widgets WHERE name = $1")
                .bind(name.as_str())
                .execute(pool)
                .await?
                .rows_affected()
        });
        if removed == 0 {
            Err(DbError::WidgetNotFound(name.clone()))
        } else {
            Ok(())
        }
    }
}

/// A `widgets` row joined with its trunk's name. No `Debug`: it holds the secret in the clear.
#[derive(sqlx::FromRow)]
struct WidgetRow {
    id: i64,
    public_id: String,
    name: String,
    trunk_id: Option<i64>,
    trunk_name: Option<String>,
    destination: String,
    origins: String,
    caller_id: Option<String>,
    max_concurrent: i64,
    max_per_minute: i64,
    secret: Option<String>,
    enabled: bool,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<WidgetRow> for Widget {
    type Error = DbError;

    fn try_from(row: WidgetRow) -> Result<Self, DbError> {
        let stored = StoredRow {
            table: "widgets",
            id: row.id,
        };
        let trunk = match (row.trunk_id, row.trunk_name) {
            (Some(id), Some(name)) => Some(WidgetTrunk {
                id: TrunkId(id),
                name: stored.text("trunk", &name)?,
            }),
            _ => None,
        };
        let secret = match row.secret {
            // Not through `text`: its message would quote the secret.
            Some(secret) => Some(
                secret
                    .parse()
                    .map_err(|_| stored.corrupt("secret", "malformed".to_owned()))?,
            ),
            None => None,
        };
        Ok(Self {
            id: WidgetId(row.id),
            public_id: stored.text("public_id", &row.public_id)?,
            name: stored.text("name", &row.name)?,
            trunk,
            destination: stored.text("destination", &row.destination)?,
            origins: stored.text("origins", &row.origins)?,
            caller_id: stored.optional_text("caller_id", row.caller_id.as_deref())?,
            max_concurrent: stored.integer("max_concurrent", row.max_concurrent)?,
            max_per_minute: stored.integer("max_per_minute", row.max_per_minute)?,
            secret,
            enabled: row.enabled,
            created_at: Timestamp::from_unix_millis(row.created_at),
            updated_at: Timestamp::from_unix_millis(row.updated_at),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{NewTrunk, on_both_backends};

    fn name(text: &str) -> Name {
        text.parse().unwrap()
    }

    async fn add_trunk(database: &Database, trunk: &str) {
        database
            .trunks()
            .add(NewTrunk::new(name(trunk), "pbx.example".parse().unwrap()))
            .await
            .unwrap();
    }

    fn shop_widget() -> NewWidget {
        let origins = "https://shop.example https://www.shop.example:8443"
            .parse()
            .unwrap();
        NewWidget::new(
            name("shop"),
            name("main"),
            "+4930123456".parse().unwrap(),
            origins,
        )
    }

    async fn every_field_round_trips(database: &Database) {
        add_trunk(database, "main").await;
        let new = NewWidget {
            caller_id: Some("website".parse().unwrap()),
            max_concurrent: 2,
            max_per_minute: 3,
            require_token: true,
            enabled: false,
            ..shop_widget()
        };
        let added = database.widgets().add(new.clone()).await.unwrap();
        let trunk = database.trunks().by_name(&name("main")).await.unwrap();
        let secret = added.secret.clone().expect("require_token generates a secret");
        let expected = Widget {
            id: added.id,
            public_id: added.public_id.clone(),
            name: new.name,
            trunk: Some(WidgetTrunk {
                id: trunk.id,
                name: trunk.name,
            }),
            destination: new.destination,
            origins: new.origins,
            caller_id: new.caller_id,
            max_concurrent: 2,
            max_per_minute: 3,
            secret: Some(secret),
            enabled: false,
            created_at: added.created_at,
            updated_at: added.created_at,
        };
        assert_eq!(added, expected);
        assert_eq!(database.widgets().by_name(&name("shop")).await.unwrap(), expected);
        assert_eq!(
            database.widgets().by_public_id(&added.public_id).await.unwrap(),
            expected
        );
        assert_eq!(database.widgets().list().await.unwrap(), [expected]);
    }

    async fn public_ids_are_distinct_and_secrets_optional(database: &Database) {
        add_trunk(database, "main").await;
        let first = database.widgets().add(shop_widget()).await.unwrap();
        let second = database
            .widgets()
            .add(NewWidget {
                name: name("blog"),
                ..shop_widget()
            })
            .await
            .unwrap();
        assert_ne!(first.public_id, second.public_id);
        assert_eq!((first.secret, second.secret), (None, None));
        let unknown = PublicId::generate();
        let error = database.widgets().by_public_id(&unknown).await.unwrap_err();
        assert!(matches!(error, DbError::PublicIdNotFound(_)), "{error}");
    }

    async fn bad_names_change_nothing(database: &Database) {
        add_trunk(database, "main").await;
        database.widgets().add(shop_widget()).await.unwrap();
        let before = database.widgets().list().await.unwrap();
        let error = database.widgets().add(shop_widget()).await.unwrap_err();
        assert!(
            matches!(&error, DbError::DuplicateWidget(widget) if widget.as_str() == "shop"),
            "{error}"
        );
        let no_trunk = NewWidget {
            name: name("blog"),
            trunk: name("missing"),
            ..shop_widget()
        };
        let error = database.widgets().add(no_trunk).await.unwrap_err();
        assert_eq!(error.to_string(), "no trunk named 'missing'");
        let move_to_missing = WidgetChanges {
            trunk: Some(name("missing")),
            ..WidgetChanges::default()
        };
        let error = database
            .widgets()
            .update(&name("shop"), move_to_missing)
            .await
            .unwrap_err();
        assert!(matches!(error, DbError::TrunkNotFound(_)), "{error}");
        let error = database
            .widgets()
            .update(&name("blog"), WidgetChanges::default())
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "no widget named 'blog'");
        assert!(matches!(
            database.widgets().remove(&name("blog")).await,
            Err(DbError::WidgetNotFound(_))
        ));
        assert_eq!(database.widgets().list().await.unwrap(), before);
    }

    async fn update_changes_only_what_is_given(database: &Database) {
        add_trunk(database, "main").await;
        add_trunk(database, "spare").await;
        let added = database.widgets().add(shop_widget()).await.unwrap();
        let changes = WidgetChanges {
            trunk: Some(name("spare")),
            origins: Some("https://new.example".parse().unwrap()),
            caller_id: Some(Some("100".parse().unwrap())),
            max_per_minute: Some(1),
            ..WidgetChanges::default()
        };
        let updated = database.widgets().update(&name("shop"), changes).await.unwrap();
        let spare = database.trunks().by_name(&name("spare")).await.unwrap();
        let expected = Widget {
            trunk: Some(WidgetTrunk {
                id: spare.id,
                name: spare.name,
            }),
            origins: "https://new.example".parse().unwrap(),
            caller_id: Some("100".parse().unwrap()),
            max_per_minute: 1,
            updated_at: updated.updated_at,
            ..added.clone()
        };
        assert_eq!(updated, expected);
        let cleared = WidgetChanges {
            caller_id: Some(None),
            ..WidgetChanges::default()
        };
        let updated = database.widgets().update(&name("shop"), cleared).await.unwrap();
        assert_eq!(updated.caller_id, None);
        assert_eq!(updated.public_id, added.public_id);
    }

    async fn secrets_are_kept_rotated_or_removed(database: &Database) {
        add_trunk(database, "main").await;
        database.widgets().add(shop_widget()).await.unwrap();
        let change = |secret| WidgetChanges {
            secret,
            ..WidgetChanges::default()
        };
        let widgets = database.widgets();
        let shop = name("shop");
        let required = widgets
            .update(&shop, change(SecretChange::Require))
            .await
            .unwrap()
            .secret;
        assert!(required.is_some());
        assert_eq!(
            widgets
                .update(&shop, change(SecretChange::Require))
                .await
                .unwrap()
                .secret,
            required
        );
        assert_eq!(
            widgets
                .update(&shop, change(SecretChange::Keep))
                .await
                .unwrap()
                .secret,
            required
        );
        let rotated = widgets
            .update(&shop, change(SecretChange::Rotate))
            .await
            .unwrap()
            .secret;
        assert!(rotated.is_some() && rotated != required);
        assert_eq!(
            widgets
                .update(&shop, change(SecretChange::Remove))
                .await
                .unwrap()
                .secret,
            None
        );
    }

    async fn a_widget_without_trunk_stays_disabled_until_given_one(database: &Database) {
        add_trunk(database, "main").await;
        add_trunk(database, "spare").await;
        database.widgets().add(shop_widget()).await.unwrap();
        database.trunks().remove(&name("main"), true).await.unwrap();
        let enable = WidgetChanges {
            enabled: Some(true),
            ..WidgetChanges::default()
        };
        let error = database
            .widgets()
            .update(&name("shop"), enable.clone())
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "widget 'shop' has no trunk: give it one with --trunk to enable it"
        );
        assert!(!database.widgets().by_name(&name("shop")).await.unwrap().enabled);
        let repaired = WidgetChanges {
            trunk: Some(name("spare")),
            ..enable
        };
        let widget = database.widgets().update(&name("shop"), repaired).await.unwrap();
        assert!(widget.enabled);
        assert_eq!(widget.trunk.map(|trunk| trunk.name), Some(name("spare")));
    }

    async fn remove_deletes_only_that_widget(database: &Database) {
        add_trunk(database, "main").await;
        database.widgets().add(shop_widget()).await.unwrap();
        let blog = database
            .widgets()
            .add(NewWidget {
                name: name("blog"),
                ..shop_widget()
            })
            .await
            .unwrap();
        database.widgets().remove(&name("shop")).await.unwrap();
        assert_eq!(database.widgets().list().await.unwrap(), [blog]);
    }

    on_both_backends!(
        every_field_round_trips,
        public_ids_are_distinct_and_secrets_optional,
        bad_names_change_nothing,
        update_changes_only_what_is_given,
        secrets_are_kept_rotated_or_removed,
        a_widget_without_trunk_stays_disabled_until_given_one,
        remove_deletes_only_that_widget,
    );
}
