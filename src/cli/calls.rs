//! `callgate calls …`

use clap::{Args, Subcommand};
use serde::Serialize;

use super::CliError;
use super::output::{Table, fields, json, or_dash};
use crate::db::{CallId, CallRecord, Database, LegSummary};

#[derive(Debug, Subcommand)]
pub(super) enum CallsCommand {
    /// List the most recent calls, newest first.
    List(ListArgs),
    /// Show one call record.
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub(super) struct ListArgs {
    /// How many calls to list (1 to 100000).
    #[arg(long, value_name = "N", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    limit: u32,
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub(super) struct ShowArgs {
    /// The call's id, as `calls list` shows it.
    #[arg(value_parser = clap::value_parser!(i64).range(1..))]
    id: i64,
    /// Print a JSON object.
    #[arg(long)]
    json: bool,
}

pub(super) async fn run(command: CallsCommand, database: &Database) -> Result<String, CliError> {
    match command {
        CallsCommand::List(args) => {
            let list = database.calls().list(args.limit).await?;
            if args.json {
                return Ok(json(&list.iter().map(CallView::from).collect::<Vec<_>>()));
            }
            let mut table = Table::new(&[
                "ID",
                "STARTED",
                "WIDGET",
                "DESTINATION",
                "SOURCE",
                "TALK",
                "ENDED BY",
                "CAUSE",
            ]);
            for call in &list {
                table.row(vec![
                    call.id.to_string(),
                    call.started_at.to_string(),
                    widget_cell(call),
                    or_dash(call.destination.as_ref()),
                    call.source_ip.to_string(),
                    or_dash(talk_millis(call).map(seconds)),
                    or_dash(call.ended_by),
                    or_dash(call.end_cause.as_ref()),
                ]);
            }
            Ok(table.render())
        }
        CallsCommand::Show(args) => {
            let call = database.calls().by_id(CallId(args.id)).await?;
            Ok(if args.json {
                json(&CallView::from(&call))
            } else {
                describe(&call)
            })
        }
    }
}

/// The widget's name; for an attempt no widget took, the public id dialled in parentheses (names cannot
/// contain them, so the two are never confused).
fn widget_cell(call: &CallRecord) -> String {
    match (&call.widget_name, &call.dialled) {
        (Some(name), _) => name.to_string(),
        (None, Some(dialled)) => format!("({dialled})"),
        (None, None) => "-".to_owned(),
    }
}

/// Milliseconds from answer to end, for answered calls that ended.
fn talk_millis(call: &CallRecord) -> Option<i64> {
    Some(call.answered_at?.millis_until(call.ended_at?))
}

fn seconds(millis: i64) -> String {
    format!("{}.{:03} s", millis / 1000, millis % 1000)
}

/// Microseconds as milliseconds with one decimal.
fn millis_text(micros: u64) -> String {
    format!("{:.1} ms", micros as f64 / 1000.0)
}

fn describe(call: &CallRecord) -> String {
    let leg = |leg: &LegSummary| {
        format!(
            "status {}, codec {}, packets sent {} received {} lost {}, bytes sent {} received {}, jitter {}, rtt {}",
            or_dash(leg.final_status),
            or_dash(leg.codec.as_ref()),
            leg.packets_sent,
            leg.packets_received,
            leg.packets_lost,
            leg.bytes_sent,
            leg.bytes_received,
            or_dash(leg.jitter_us.map(millis_text)),
            or_dash(leg.rtt_us.map(millis_text)),
        )
    };
    fields(&[
        ("id", call.id.to_string()),
        ("widget", or_dash(call.widget_name.as_ref())),
        ("dialled", or_dash(call.dialled.as_ref())),
        ("trunk", or_dash(call.trunk_name.as_ref())),
        ("destination", or_dash(call.destination.as_ref())),
        ("source ip", call.source_ip.to_string()),
        ("user agent", or_dash(call.user_agent.as_ref())),
        ("started", call.started_at.to_string()),
        ("answered", or_dash(call.answered_at)),
        ("ended", or_dash(call.ended_at)),
        ("talk time", or_dash(talk_millis(call).map(seconds))),
        ("ended by", or_dash(call.ended_by)),
        ("end cause", or_dash(call.end_cause.as_ref())),
        ("browser leg", leg(&call.browser)),
        ("pbx leg", leg(&call.pbx)),
    ])
}

/// A call record as `--json` prints it. The keys are an interface: add keys, never rename them. `widget`
/// and `destination` are null for attempts no widget took (an unknown public id, a draining gateway).
#[derive(Serialize)]
struct CallView {
    id: i64,
    widget: Option<String>,
    /// The public id in the browser's Request-URI.
    dialled: Option<String>,
    trunk: Option<String>,
    destination: Option<String>,
    source_ip: String,
    user_agent: Option<String>,
    started_at: String,
    answered_at: Option<String>,
    ended_at: Option<String>,
    /// Answer to end, in milliseconds.
    talk_ms: Option<i64>,
    end_cause: Option<String>,
    ended_by: Option<&'static str>,
    browser: LegView,
    pbx: LegView,
}

#[derive(Serialize)]
struct LegView {
    final_status: Option<u16>,
    codec: Option<String>,
    packets_sent: u64,
    packets_received: u64,
    packets_lost: u64,
    bytes_sent: u64,
    bytes_received: u64,
    /// Interarrival jitter of the stream from this side, milliseconds; null when never measured.
    jitter_ms: Option<f64>,
    /// RTCP round-trip time to this side, milliseconds; null when never measured.
    rtt_ms: Option<f64>,
}

impl From<&LegSummary> for LegView {
    fn from(leg: &LegSummary) -> Self {
        Self {
            final_status: leg.final_status,
            codec: leg.codec.clone(),
            packets_sent: leg.packets_sent,
            packets_received: leg.packets_received,
            packets_lost: leg.packets_lost,
            bytes_sent: leg.bytes_sent,
            bytes_received: leg.bytes_received,
            jitter_ms: leg.jitter_us.map(|micros| micros as f64 / 1000.0),
            rtt_ms: leg.rtt_us.map(|micros| micros as f64 / 1000.0),
        }
    }
}

impl From<&CallRecord> for CallView {
    fn from(call: &CallRecord) -> Self {
        Self {
            id: call.id.0,
            widget: call.widget_name.as_ref().map(ToString::to_string),
            dialled: call.dialled.clone(),
            trunk: call.trunk_name.as_ref().map(ToString::to_string),
            destination: call.destination.as_ref().map(ToString::to_string),
            source_ip: call.source_ip.to_string(),
            user_agent: call.user_agent.clone(),
            started_at: call.started_at.to_string(),
            answered_at: call.answered_at.map(|at| at.to_string()),
            ended_at: call.ended_at.map(|at| at.to_string()),
            talk_ms: talk_millis(call),
            end_cause: call.end_cause.clone(),
            ended_by: call.ended_by.map(|side| side.as_str()),
            browser: LegView::from(&call.browser),
            pbx: LegView::from(&call.pbx),
        }
    }
}
