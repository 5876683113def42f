//! Call detail records: one row per call attempt, written when it starts and completed when it is answered
//! and ends. Attempts refused before a widget is known (an unknown or malformed public id, a draining or
//! overloaded gateway) get a row too, without widget and destination but with the public id dialled.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::{
    Database, DbError, Destination, InvalidValue, Name, StoredRow, Timestamp, TrunkId, WidgetId, with_pool,
};

/// A call record's primary key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub i64);

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Which side ended a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    /// The browser hung up, closed the WebSocket or stopped answering ICE consent checks.
    Browser,
    /// The PBX hung up or refused the call.
    Pbx,
    /// callgate ended it (media timeout, shutdown, limit).
    Gateway,
}

impl EndedBy {
    /// The lower-case name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Browser => "browser",
            Self::Pbx => "pbx",
            Self::Gateway => "gateway",
        }
    }
}

impl FromStr for EndedBy {
    type Err = InvalidValue;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "browser" => Ok(Self::Browser),
            "pbx" => Ok(Self::Pbx),
            "gateway" => Ok(Self::Gateway),
            _ => Err(InvalidValue::EndedBy),
        }
    }
}

impl fmt::Display for EndedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one leg of a call went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LegSummary {
    /// The final SIP status of the INVITE on this leg (200 when answered).
    pub final_status: Option<u16>,
    /// The codec the leg used (`opus`, `pcmu`, …).
    pub codec: Option<String>,
    /// RTP packets sent to this side.
    pub packets_sent: u64,
    /// RTP packets received from this side.
    pub packets_received: u64,
    /// RTP packets from this side that never arrived.
    pub packets_lost: u64,
    /// RTP payload bytes sent to this side.
    pub bytes_sent: u64,
    /// RTP payload bytes received from this side.
    pub bytes_received: u64,
    /// Interarrival jitter of this side's stream, in microseconds, when measured.
    pub jitter_us: Option<u64>,
    /// Round-trip time to this side from RTCP, in microseconds, when measured.
    pub rtt_us: Option<u64>,
}

/// A call as it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCall {
    /// The widget called through and its name (kept in the record after the widget is gone); `None` when
    /// no widget has the dialled public id.
    pub widget: Option<(WidgetId, Name)>,
    /// The public id in the Request-URI, as dialled (shortened and stripped of control characters when
    /// stored); `None` when the URI carried none.
    pub dialled: Option<String>,
    /// The first trunk tried.
    pub trunk: Option<(TrunkId, Name)>,
    /// The browser's address.
    pub source_ip: IpAddr,
    /// The browser's `User-Agent` (shortened and stripped of control characters when stored).
    pub user_agent: Option<String>,
    /// What is called; `None` when no widget was found.
    pub destination: Option<Destination>,
    /// When the INVITE arrived.
    pub started_at: Timestamp,
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEnd {
    /// When it ended.
    pub ended_at: Timestamp,
    /// Why, in a few words (`bye`, `cancel`, `busy`, `media-timeout`, …).
    pub end_cause: String,
    /// Who ended it.
    pub ended_by: EndedBy,
    /// The trunk that carried the call, when failover moved it off the first one.
    pub trunk: Option<(TrunkId, Name)>,
    /// The browser leg.
    pub browser: LegSummary,
    /// The PBX leg.
    pub pbx: LegSummary,
}

/// A stored call record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// Primary key.
    pub id: CallId,
    /// The widget, while it exists.
    pub widget_id: Option<WidgetId>,
    /// The widget's name when the call was made; `None` when no widget had the dialled public id.
    pub widget_name: Option<Name>,
    /// The public id the browser dialled, if its Request-URI carried one.
    pub dialled: Option<String>,
    /// The trunk, while it exists.
    pub trunk_id: Option<TrunkId>,
    /// The trunk's name when the call was made.
    pub trunk_name: Option<Name>,
    /// The browser's address.
    pub source_ip: IpAddr,
    /// The browser's user agent.
    pub user_agent: Option<String>,
    /// What was called; `None` when no widget was found.
    pub destination: Option<Destination>,
    /// When the INVITE arrived.
    pub started_at: Timestamp,
    /// When the PBX answered.
    pub answered_at: Option<Timestamp>,
    /// When it ended; `None` while in progress (or if the gateway stopped abruptly).
    pub ended_at: Option<Timestamp>,
    /// Why it ended.
    pub end_cause: Option<String>,
    /// Who ended it.
    pub ended_by: Option<EndedBy>,
    /// The browser leg.
    pub browser: LegSummary,
    /// The PBX leg.
    pub pbx: LegSummary,
}

/// The longest user agent and end cause kept: they come from the network.
const MAX_STORED_TEXT: usize = 256;

/// The call-record repository; get one from [`Database::calls`].
#[derive(Debug, Clone, Copy)]
pub struct Calls<'a> {
    database: &'a Database,
}

/// `SELECT` of every call column, followed by the rest of the query.
macro_rules! select_calls {
    ($rest:literal) => {
        concat!(
            "SELECT id, widget_id, widget_name, dialled, trunk_id, trunk_name, source_ip, user_agent, destination, \
             started_at, answered_at, ended_at, end_cause, ended_by, browser_status, browser_codec, \
             browser_packets_sent, browser_packets_received, browser_packets_lost, pbx_status, pbx_codec, \
             pbx_packets_sent, pbx_packets_received, pbx_packets_lost, browser_bytes_sent, \
             browser_bytes_received, browser_jitter_us, browser_rtt_us, pbx_bytes_sent, pbx_bytes_received, \
             pbx_jitter_us, pbx_rtt_us FROM calls ",
            $rest
        )
    };
}

impl<'a> Calls<'a> {
    pub(super) fn new(database: &'a Database) -> Self {
        Self { database }
    }

    /// Records a call as it starts and returns its id.
    pub async fn start(&self, call: NewCall) -> Result<CallId, DbError> {
        let (trunk_id, trunk_name) = call.trunk.map(|(id, name)| (id.0, name.to_string())).unzip();
        let (widget_id, widget_name) = call.widget.map(|(id, name)| (id.0, name.to_string())).unzip();
        let id = with_pool!(self.database, |pool| {
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO calls (widget_id, widget_name, dialled, trunk_id, trunk_name, source_ip, \
                 user_agent, destination, started_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
            )
            .bind(widget_id)
            .bind(widget_name)
            .bind(call.dialled.as_deref().map(printable))
            .bind(trunk_id)
            .bind(trunk_name)
            .bind(call.source_ip.to_string())
            .bind(call.user_agent.as_deref().map(printable))
            .bind(call.destination.as_ref().map(Destination::as_str))
            .bind(call.started_at.unix_millis())
            .fetch_one(pool)
            .await?
        });
        Ok(CallId(id))
    }

    /// Records that the PBX answered.
    pub async fn answered(&self, id: CallId, at: Timestamp) -> Result<(), DbError> {
        let updated = with_pool!(self.database, |pool| {
            sqlx::query("UPDATE calls SET answered_at = $2 WHERE id = $1")
                .bind(id.0)
                .bind(at.unix_millis())
                .execute(pool)
                .await?
                .rows_affected()
        });
        if updated == 0 {
            Err(DbError::CallNotFound(id))
        } else {
            Ok(())
        }
    }

    /// Records how the call ended.
    pub async fn finish(&self, id: CallId, end: CallEnd) -> Result<(), DbError> {
        let (trunk_id, trunk_name) = end.trunk.map(|(id, name)| (id.0, name.to_string())).unzip();
        let updated = with_pool!(self.database, |pool| {
            sqlx::query(
                "UPDATE calls SET ended_at = $2, end_cause = $3, ended_by = $4, \
                 trunk_id = COALESCE($5, trunk_id), trunk_name = COALESCE($6, trunk_name), \
                 browser_status = $7, browser_codec = $8, browser_packets_sent = $9, \
                 browser_packets_received = $10, browser_packets_lost = $11, pbx_status = $12, pbx_codec = $13, \
                 pbx_packets_sent = $14, pbx_packets_received = $15, pbx_packets_lost = $16, \
                 browser_bytes_sent = $17, browser_bytes_received = $18, browser_jitter_us = $19, \
                 browser_rtt_us = $20, pbx_bytes_sent = $21, pbx_bytes_received = $22, pbx_jitter_us = $23, \
                 pbx_rtt_us = $24 WHERE id = $1",
            )
            .bind(id.0)
            .bind(end.ended_at.unix_millis())
            .bind(printable(&end.end_cause))
            .bind(end.ended_by.as_str())
            .bind(trunk_id)
            .bind(trunk_name)
            .bind(end.browser.final_status.map(i64::from))
            .bind(end.browser.codec.as_deref().map(printable))
            .bind(saturating_i64(end.browser.packets_sent))
            .bind(saturating_i64(end.browser.packets_received))
            .bind(saturating_i64(end.browser.packets_lost))
            .bind(end.pbx.final_status.map(i64::from))
            .bind(end.pbx.codec.as_deref().map(printable))
            .bind(saturating_i64(end.pbx.packets_sent))
            .bind(saturating_i64(end.pbx.packets_received))
            .bind(saturating_i64(end.pbx.packets_lost))
            .bind(saturating_i64(end.browser.bytes_sent))
            .bind(saturating_i64(end.browser.bytes_received))
            .bind(end.browser.jitter_us.map(saturating_i64))
            .bind(end.browser.rtt_us.map(saturating_i64))
            .bind(saturating_i64(end.pbx.bytes_sent))
            .bind(saturating_i64(end.pbx.bytes_received))
            .bind(end.pbx.jitter_us.map(saturating_i64))
            .bind(end.pbx.rtt_us.map(saturating_i64))
            .execute(pool)
            .await?
            .rows_affected()
        });
        if updated == 0 {
            Err(DbError::CallNotFound(id))
        } else {
            Ok(())
        }
    }

    /// The `limit` most recent calls, newest first.
    pub async fn list(&self, limit: u32) -> Result<Vec<CallRecord>, DbError> {
        let rows: Vec<CallRow> = with_pool!(self.database, |pool| {
            sqlx::query_as(select_calls!("ORDER BY started_at DESC, id DESC LIMIT $1"))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(CallRecord::try_from).collect()
    }

    /// The call with this id; [`DbError::CallNotFound`] when there is none.
    pub async fn by_id(&self, id: CallId) -> Result<CallRecord, DbError> {
        let row: Option<CallRow> = with_pool!(self.database, |pool| {
            sqlx::query_as(select_calls!("WHERE id = $1"))
                .bind(id.0)
                .fetch_optional(pool)
                .await?
        });
        row.ok_or(DbError::CallNotFound(id))?.try_into()
    }
}

/// Network-supplied text as stored: control characters replaced (they could rewrite an operator's
/// terminal when listed), at most [`MAX_STORED_TEXT`] characters.
fn printable(text: &str) -> String {
    text.chars()
        .take(MAX_STORED_TEXT)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn saturating_i64(count: u64) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// A `calls` row as stored.
#[derive(sqlx::FromRow)]
struct CallRow {
    id: i64,
    widget_id: Option<i64>,
    widget_name: Option<String>,
    dialled: Option<String>,
    trunk_id: Option<i64>,
    trunk_name: Option<String>,
    source_ip: String,
    user_agent: Option<String>,
    destination: Option<String>,
    started_at: i64,
    answered_at: Option<i64>,
    ended_at: Option<i64>,
    end_cause: Option<String>,
    ended_by: Option<String>,
    browser_status: Option<i64>,
    browser_codec: Option<String>,
    browser_packets_sent: i64,
    browser_packets_received: i64,
    browser_packets_lost: i64,
    pbx_status: Option<i64>,
    pbx_codec: Option<String>,
    pbx_packets_sent: i64,
    pbx_packets_received: i64,
    pbx_packets_lost: i64,
    browser_bytes_sent: i64,
    browser_bytes_received: i64,
    browser_jitter_us: Option<i64>,
    browser_rtt_us: Option<i64>,
    pbx_bytes_sent: i64,
    pbx_bytes_received: i64,
    pbx_jitter_us: Option<i64>,
    pbx_rtt_us: Option<i64>,
}

impl TryFrom<CallRow> for CallRecord {
    type Error = DbError;

    fn try_from(row: CallRow) -> Result<Self, DbError> {
        let stored = StoredRow {
            table: "calls",
            id: row.id,
        };
        let source_ip = row
            .source_ip
            .parse()
            .map_err(|_| stored.corrupt("source_ip", format!("'{}' is not an IP address", row.source_ip)))?;
        let status =
            |column, status: Option<i64>| status.map(|status| stored.integer(column, status)).transpose();
        let optional =
            |column, value: Option<i64>| value.map(|value| stored.integer(column, value)).transpose();
        Ok(Self {
            id: CallId(row.id),
            widget_id: row.widget_id.map(WidgetId),
            widget_name: stored.optional_text("widget_name", row.widget_name.as_deref())?,
            dialled: row.dialled,
            trunk_id: row.trunk_id.map(TrunkId),
            trunk_name: stored.optional_text("trunk_name", row.trunk_name.as_deref())?,
            source_ip,
            user_agent: row.user_agent,
            destination: stored.optional_text("destination", row.destination.as_deref())?,
            started_at: Timestamp::from_unix_millis(row.started_at),
            answered_at: row.answered_at.map(Timestamp::from_unix_millis),
            ended_at: row.ended_at.map(Timestamp::from_unix_millis),
            end_cause: row.end_cause,
            ended_by: stored.optional_text("ended_by", row.ended_by.as_deref())?,
            browser: LegSummary {
                final_status: status("browser_status", row.browser_status)?,
                codec: row.browser_codec,
                packets_sent: stored.integer("browser_packets_sent", row.browser_packets_sent)?,
                packets_received: stored.integer("browser_packets_received", row.browser_packets_received)?,
                packets_lost: stored.integer("browser_packets_lost", row.browser_packets_lost)?,
                bytes_sent: stored.integer("browser_bytes_sent", row.browser_bytes_sent)?,
                bytes_received: stored.integer("browser_bytes_received", row.browser_bytes_received)?,
                jitter_us: optional("browser_jitter_us", row.browser_jitter_us)?,
                rtt_us: optional("browser_rtt_us", row.browser_rtt_us)?,
            },
            pbx: LegSummary {
                final_status: status("pbx_status", row.pbx_status)?,
                codec: row.pbx_codec,
                packets_sent: stored.integer("pbx_packets_sent", row.pbx_packets_sent)?,
                packets_received: stored.integer("pbx_packets_received", row.pbx_packets_received)?,
                packets_lost: stored.integer("pbx_packets_lost", row.pbx_packets_lost)?,
                bytes_sent: stored.integer("pbx_bytes_sent", row.pbx_bytes_sent)?,
                bytes_received: stored.integer("pbx_bytes_received", row.pbx_bytes_received)?,
                jitter_us: optional("pbx_jitter_us", row.pbx_jitter_us)?,
                rtt_us: optional("pbx_rtt_us", row.pbx_rtt_us)?,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{NewTrunk, NewWidget, on_both_backends};

    fn name(text: &str) -> Name {
        text.parse().unwrap()
    }

    /// A trunk `main` and a widget `shop`; returns the call a browser would start through them.
    async fn new_call(database: &Database, started_at: i64) -> NewCall {
        let trunk = match database.trunks().by_name(&name("main")).await {
            Ok(trunk) => trunk,
            Err(_) => database
                .trunks()
                .add(NewTrunk::new(name("main"), "pbx.example".parse().unwrap()))
                .await
                .unwrap(),
        };
        let widget = match database.widgets().by_name(&name("shop")).await {
            Ok(widget) => widget,
            Err(_) => {
                let origins = "https://shop.example".parse().unwrap();
                let new = NewWidget::new(name("shop"), name("main"), "100".parse().unwrap(), origins);
                database.widgets().add(new).await.unwrap()
            }
        };
        NewCall {
            widget: Some((widget.id, widget.name)),
            dialled: Some(widget.public_id.to_string()),
            trunk: Some((trunk.id, trunk.name)),
            source_ip: "203.0.113.9".parse().unwrap(),
            user_agent: Some("Mozilla/5.0 JsSIP".to_owned()),
            destination: Some(widget.destination),
            started_at: Timestamp::from_unix_millis(started_at),
        }
    }

    async fn a_call_is_recorded_from_start_to_end(database: &Database) {
        let call = new_call(database, 1_000).await;
        let id = database.calls().start(call.clone()).await.unwrap();
        let started = database.calls().by_id(id).await.unwrap();
        assert_eq!(
            (started.answered_at, started.ended_at, started.ended_by),
            (None, None, None)
        );

        database
            .calls()
            .answered(id, Timestamp::from_unix_millis(3_000))
            .await
            .unwrap();
        let browser = LegSummary {
            final_status: Some(200),
            codec: Some("opus".to_owned()),
            packets_sent: 500,
            packets_received: 498,
            packets_lost: 2,
            bytes_sent: 40_000,
            bytes_received: 39_840,
            jitter_us: Some(1_250),
            rtt_us: Some(3_400),
        };
        let pbx = LegSummary {
            codec: Some("pcmu".to_owned()),
            packets_lost: 0,
            jitter_us: Some(800),
            rtt_us: None,
            ..browser.clone()
        };
        let end = CallEnd {
            ended_at: Timestamp::from_unix_millis(13_000),
            end_cause: "bye".to_owned(),
            ended_by: EndedBy::Pbx,
            trunk: None,
            browser: browser.clone(),
            pbx: pbx.clone(),
        };
        database.calls().finish(id, end).await.unwrap();
        let (trunk_id, trunk_name) = call.trunk.unzip();
        let (widget_id, widget_name) = call.widget.unzip();
        let expected = CallRecord {
            id,
            widget_id,
            widget_name,
            dialled: call.dialled,
            trunk_id,
            trunk_name,
            source_ip: call.source_ip,
            user_agent: call.user_agent,
            destination: call.destination,
            started_at: call.started_at,
            answered_at: Some(Timestamp::from_unix_millis(3_000)),
            ended_at: Some(Timestamp::from_unix_millis(13_000)),
            end_cause: Some("bye".to_owned()),
            ended_by: Some(EndedBy::Pbx),
            browser,
            pbx,
        };
        assert_eq!(database.calls().by_id(id).await.unwrap(), expected);
    }

    async fn list_is_newest_first_and_limited(database: &Database) {
        let mut ids = Vec::new();
        for started_at in [2_000, 1_000, 3_000] {
            ids.push(
                database
                    .calls()
                    .start(new_call(database, started_at).await)
                    .await
                    .unwrap(),
            );
        }
        let listed: Vec<CallId> = database
            .calls()
            .list(10)
            .await
            .unwrap()
            .iter()
            .map(|call| call.id)
            .collect();
        assert_eq!(listed, [ids[2], ids[0], ids[1]]);
        let limited: Vec<CallId> = database
            .calls()
            .list(2)
            .await
            .unwrap()
            .iter()
            .map(|call| call.id)
            .collect();
        assert_eq!(limited, [ids[2], ids[0]]);
    }

    async fn unknown_ids_are_reported(database: &Database) {
        let missing = CallId(4242);
        assert_eq!(
            database.calls().by_id(missing).await.unwrap_err().to_string(),
            "no call record with id 4242"
        );
        let answered = database
            .calls()
            .answered(missing, Timestamp::from_unix_millis(1))
            .await;
        assert!(matches!(answered, Err(DbError::CallNotFound(_))));
    }

    async fn network_text_is_made_printable_and_short(database: &Database) {
        let call = NewCall {
            user_agent: Some(format!("evil\u{1b}[2J{}", "x".repeat(400))),
            ..new_call(database, 1).await
        };
        let id = database.calls().start(call).await.unwrap();
        let user_agent = database.calls().by_id(id).await.unwrap().user_agent.unwrap();
        assert!(user_agent.starts_with("evil?[2Jxxx"), "{user_agent}");
        assert_eq!(user_agent.chars().count(), MAX_STORED_TEXT);
    }

    async fn records_outlive_their_widget_and_trunk(database: &Database) {
        let id = database.calls().start(new_call(database, 1).await).await.unwrap();
        database.widgets().remove(&name("shop")).await.unwrap();
        database.trunks().remove(&name("main"), false).await.unwrap();
        let record = database.calls().by_id(id).await.unwrap();
        assert_eq!((record.widget_id, record.trunk_id), (None, None));
        assert_eq!(
            (record.widget_name, record.trunk_name),
            (Some(name("shop")), Some(name("main")))
        );
    }

    async fn attempts_without_a_widget_are_recorded(database: &Database) {
        let call = NewCall {
            widget: None,
            dialled: Some("no-such-widget\u{7}".to_owned()),
            trunk: None,
            source_ip: "2001:db8::7".parse().unwrap(),
            user_agent: None,
            destination: None,
            started_at: Timestamp::from_unix_millis(5_000),
        };
        let id = database.calls().start(call).await.unwrap();
        let end = CallEnd {
            ended_at: Timestamp::from_unix_millis(5_001),
            end_cause: "unknown_widget".to_owned(),
            ended_by: EndedBy::Gateway,
            trunk: None,
            browser: LegSummary {
                final_status: Some(404),
                ..LegSummary::default()
            },
            pbx: LegSummary::default(),
        };
        database.calls().finish(id, end).await.unwrap();
        let record = database.calls().by_id(id).await.unwrap();
        assert_eq!(
            (record.widget_id, record.widget_name, record.destination),
            (None, None, None)
        );
        assert_eq!(record.dialled.as_deref(), Some("no-such-widget?"));
        assert_eq!(record.source_ip, "2001:db8::7".parse::<IpAddr>().unwrap());
        assert_eq!(record.end_cause.as_deref(), Some("unknown_widget"));
        assert_eq!(record.ended_by, Some(EndedBy::Gateway));
        assert_eq!(record.browser.final_status, Some(404));
    }

    on_both_backends!(
        a_call_is_recorded_from_start_to_end,
        list_is_newest_first_and_limited,
        unknown_ids_are_reported,
        network_text_is_made_printable_and_short,
        records_outlive_their_widget_and_trunk,
        attempts_without_a_widget_are_recorded,
    );

    /// Applies only the first migration, records a trunk, a widget and a call the way callgate 0001 did, then
    /// migrates to the current schema: the call keeps its widget and gains the public id dialled.
    async fn calls_from_before_survive_the_refused_calls_migration(url: &str, dialect: &str) {
        let database = Database::connect(url).await.unwrap();
        let first_only = tempfile::tempdir().unwrap();
        let initial = format!("{}/sql/{dialect}/0001_initial.sql", env!("CARGO_MANIFEST_DIR"));
        std::fs::copy(initial, first_only.path().join("0001_initial.sql")).unwrap();
        let initial_schema = sqlx::migrate::Migrator::new(first_only.path()).await.unwrap();
        with_pool!(database, |pool| initial_schema.run(pool).await.unwrap());
        let trunk = NewTrunk::new(name("main"), "pbx.example".parse().unwrap());
        database.trunks().add(trunk).await.unwrap();
        let origins = "https://shop.example".parse().unwrap();
        let widget = NewWidget::new(name("shop"), name("main"), "100".parse().unwrap(), origins);
        let widget = database.widgets().add(widget).await.unwrap();
        with_pool!(database, |pool| {
            sqlx::query(
                "INSERT INTO calls (widget_id, widget_name, source_ip, destination, started_at, end_cause) \
                 VALUES ($1, 'shop', '203.0.113.9', '100', 1000, 'bye')",
            )
            .bind(widget.id.0)
            .execute(pool)
            .await
            .unwrap();
        });
        database.migrate().await.unwrap();
        let records = database.calls().list(10).await.unwrap();
        assert_eq!(records.len(), 1);
        let record = &records[0];
        assert_eq!(record.widget_id, Some(widget.id));
        assert_eq!(record.widget_name, Some(name("shop")));
        assert_eq!(record.dialled.as_deref(), Some(widget.public_id.as_str()));
        assert_eq!(record.destination, Some("100".parse().unwrap()));
        assert_eq!(record.end_cause.as_deref(), Some("bye"));
        let next = database
            .calls()
            .start(new_call(&database, 2_000).await)
            .await
            .unwrap();
        assert!(next.0 > record.id.0);
        database.close().await;
    }

    #[tokio::test]
    async fn sqlite_calls_from_before_survive_the_refused_calls_migration() {
        let test_database = crate::db::test_databases::TestDatabase::sqlite();
        calls_from_before_survive_the_refused_calls_migration(test_database.url(), "sqlite").await;
    }

    #[tokio::test]
    async fn postgres_calls_from_before_survive_the_refused_calls_migration() {
        let test_database = crate::db::test_databases::TestDatabase::postgres();
        calls_from_before_survive_the_refused_calls_migration(test_database.url(), "postgres").await;
    }
}
