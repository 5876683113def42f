//! The admin command line, run as the real binary against SQLite and PostgreSQL: the round trip of the
//! Foundation issue, and every bad input (exit status, one `error: ` line, database unchanged).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use callgate::db::{CallEnd, Database, EndedBy, LegSummary, NewCall, Timestamp};
use common::{Callgate, TestDatabase, callgate};
use serde_json::{Value, json};

/// Turns each `fn(&Callgate)` scenario into `sqlite::NAME` and `postgres::NAME`, each on a fresh, migrated
/// database of its own.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $( #[test] fn $scenario() { super::$scenario(&super::Callgate::migrated(super::TestDatabase::sqlite())); } )*
        }
        mod postgres {
            $( #[test] fn $scenario() { super::$scenario(&super::Callgate::migrated(super::TestDatabase::postgres())); } )*
        }
    };
}

on_both_backends!(
    trunk_and_widget_round_trip,
    updates_change_only_what_is_given,
    unknown_names_are_refused,
    duplicate_names_are_refused,
    malformed_values_are_refused,
    removing_a_trunk_in_use_needs_force,
    call_records_are_listed_and_shown,
    widget_tokens_verify_with_the_widget_secret,
    widget_secrets_are_exported_only_on_request_and_logged,
);

const TRUNK_PASSWORD: &str = "s3cret-pw";

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("not JSON ({error}): {text}"))
}

fn keys(object: &Value) -> BTreeSet<&str> {
    object
        .as_object()
        .expect("a JSON object")
        .keys()
        .map(String::as_str)
        .collect()
}

fn add_trunk(callgate: &Callgate, name: &str) -> String {
    callgate
        .run(&["trunk", "add", name, "--host", "pbx.example"])
        .success()
}

fn add_widget(callgate: &Callgate, name: &str, trunk: &str) -> String {
    let args = [
        "widget",
        "add",
        name,
        "--trunk",
        trunk,
        "--destination",
        "100",
        "--origin",
        "https://shop.example",
    ];
    callgate.run(&args).success()
}

/// Adds widget `signed`, which requires tokens, on trunk `pbx`.
fn add_signed_widget(callgate: &Callgate) {
    callgate
        .run(&[
            "widget",
            "add",
            "signed",
            "--trunk",
            "pbx",
            "--destination",
            "100",
            "--origin",
            "https://shop.example",
            "--require-token",
        ])
        .success();
}

/// Reads a widget's secret through the library, to prove the CLI never prints it.
fn widget_secret(callgate: &Callgate, widget: &str) -> String {
    let url = callgate.database_url().to_owned();
    let widget = widget.parse().expect("valid name");
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async move {
        let database = Database::connect(&url).await.expect("connect");
        let widget = database
            .widgets()
            .by_name(&widget)
            .await
            .expect("the widget exists");
        widget.secret.expect("a secret").expose().to_owned()
    })
}

fn trunk_and_widget_round_trip(callgate: &Callgate) {
    let mut printed = callgate
        .run(&[
            "trunk",
            "add",
            "main",
            "--host",
            "PBX.example",
            "--transport",
            "tls",
            "--username",
            "gw",
            "--password",
            TRUNK_PASSWORD,
            "--realm",
            "pbx.example",
            "--register",
            "--priority",
            "5",
            "--codecs",
            "pcma,pcmu",
            "--outbound-proxy",
            "proxy.example:5080",
        ])
        .success();
    assert_eq!(printed, "added trunk main\n");
    printed += &callgate
        .run(&[
            "widget",
            "add",
            "shop",
            "--trunk",
            "main",
            "--destination",
            "+4930123456",
            "--origin",
            "https://Shop.Example",
            "--origin",
            "https://shop.example:8443",
            "--caller-id",
            "website",
            "--max-concurrent",
            "3",
            "--max-per-minute",
            "12",
            "--require-token",
        ])
        .success();

    let trunks_text = callgate.run(&["trunk", "list", "--json"]).success();
    let trunks = parse(&trunks_text);
    let trunk = &trunks[0];
    assert_eq!(trunks.as_array().map(Vec::len), Some(1));
    let expected_trunk = json!({
        "name": "main", "host": "pbx.example", "port": 5061, "transport": "tls",
        "outbound_proxy": "proxy.example:5080", "username": "gw", "password": "***", "realm": "pbx.example",
        "register": true, "register_expiry": 3600, "codecs": ["pcma", "pcmu"], "priority": 5, "enabled": true,
        "created_at": trunk["created_at"], "updated_at": trunk["updated_at"],
    });
    assert_eq!(trunk, &expected_trunk);
    assert!(
        trunk["created_at"].as_str().is_some_and(|at| at.ends_with('Z')),
        "{trunk}"
    );

    let widgets_text = callgate.run(&["widget", "list", "--json"]).success();
    let widgets = parse(&widgets_text);
    let widget = &widgets[0];
    assert_eq!(widgets.as_array().map(Vec::len), Some(1));
    let public_id = widget["public_id"].as_str().expect("a public id").to_owned();
    assert_eq!(public_id.len(), 22);
    let expected_widget = json!({
        "name": "shop", "public_id": public_id, "trunk": "main", "destination": "+4930123456",
        "origins": ["https://shop.example", "https://shop.example:8443"], "caller_id": "website",
        "max_concurrent": 3, "max_per_minute": 12, "require_token": true, "enabled": true,
        "created_at": widget["created_at"], "updated_at": widget["updated_at"],
    });
    assert_eq!(widget, &expected_widget);
    assert!(
        printed.contains(&public_id),
        "widget add prints the public id: {printed}"
    );

    assert_eq!(
        parse(&callgate.run(&["trunk", "show", "main", "--json"]).success()),
        expected_trunk
    );
    assert_eq!(
        parse(&callgate.run(&["widget", "show", "shop", "--json"]).success()),
        expected_widget
    );
    let shown = callgate.run(&["widget", "show", "shop"]).success();
    assert!(
        shown.contains(&format!("public id:      {public_id}\n")),
        "{shown}"
    );
    let snippet = callgate
        .run(&["widget", "snippet", "shop", "--gateway", "https://gw.example/"])
        .success();
    assert_eq!(
        snippet,
        format!("<script src=\"https://gw.example/widget.js\" data-widget=\"{public_id}\" async></script>\n")
    );
    let default_snippet = callgate.run(&["widget", "snippet", "shop"]).success();
    assert!(
        default_snippet.starts_with("<script src=\"http://127.0.0.1:8080/widget.js\""),
        "{default_snippet}"
    );

    let trunk_table = callgate.run(&["trunk", "list"]).success();
    let lines: Vec<&str> = trunk_table.lines().collect();
    assert_eq!(lines.len(), 2, "{trunk_table}");
    assert!(
        lines[0].starts_with("NAME  HOST         PORT  TRANSPORT"),
        "{trunk_table}"
    );
    assert!(
        lines[1].starts_with("main  pbx.example  5061  tls"),
        "{trunk_table}"
    );
    let widget_table = callgate.run(&["widget", "list"]).success();
    assert!(
        widget_table
            .lines()
            .nth(1)
            .is_some_and(|line| line.starts_with("shop  ")),
        "{widget_table}"
    );

    let secret = widget_secret(callgate, "shop");
    for output in [
        printed,
        trunks_text,
        widgets_text,
        shown,
        trunk_table,
        widget_table,
        callgate.run(&["trunk", "show", "main"]).success(),
    ] {
        assert!(!output.contains(TRUNK_PASSWORD), "password printed: {output}");
        assert!(!output.contains(&secret), "widget secret printed: {output}");
    }
    assert_eq!(keys(trunk), keys(&expected_trunk));
}

fn updates_change_only_what_is_given(callgate: &Callgate) {
    callgate
        .run(&[
            "trunk",
            "add",
            "main",
            "--host",
            "pbx.example",
            "--username",
            "gw",
            "--password",
            "pw",
            "--register",
        ])
        .success();
    add_trunk(callgate, "spare");
    callgate
        .run(&[
            "widget",
            "add",
            "shop",
            "--trunk",
            "main",
            "--destination",
            "100",
            "--origin",
            "https://a.example",
            "--caller-id",
            "7",
        ])
        .success();
    let before = parse(&callgate.run(&["widget", "show", "shop", "--json"]).success());

    let updated = callgate
        .run(&[
            "trunk",
            "update",
            "main",
            "--port",
            "5070",
            "--transport",
            "tcp",
            "--no-auth",
            "--no-register",
            "--disable",
        ])
        .success();
    assert_eq!(updated, "updated trunk main\n");
    let trunk = parse(&callgate.run(&["trunk", "show", "main", "--json"]).success());
    assert_eq!(
        (
            &trunk["port"],
            &trunk["transport"],
            &trunk["username"],
            &trunk["password"]
        ),
        (&json!(5070), &json!("tcp"), &Value::Null, &Value::Null)
    );
    assert_eq!(
        (&trunk["register"], &trunk["enabled"], &trunk["host"]),
        (&json!(false), &json!(false), &json!("pbx.example"))
    );

    callgate
        .run(&[
            "widget",
            "update",
            "shop",
            "--trunk",
            "spare",
            "--origin",
            "https://b.example",
            "--origin",
            "https://c.example",
            "--no-caller-id",
            "--require-token",
        ])
        .success();
    let widget = parse(&callgate.run(&["widget", "show", "shop", "--json"]).success());
    let expected = json!({
        "trunk": "spare", "origins": ["https://b.example", "https://c.example"], "caller_id": null,
        "require_token": true, "updated_at": widget["updated_at"],
    });
    let mut merged = before.clone();
    for (key, value) in expected.as_object().expect("an object") {
        merged[key] = value.clone();
    }
    assert_eq!(widget, merged);
    let secret = widget_secret(callgate, "shop");
    callgate
        .run(&["widget", "update", "shop", "--rotate-secret"])
        .success();
    assert_ne!(widget_secret(callgate, "shop"), secret);
    callgate
        .run(&["widget", "update", "shop", "--no-require-token"])
        .success();
    let widget = parse(&callgate.run(&["widget", "show", "shop", "--json"]).success());
    assert_eq!(widget["require_token"], json!(false));
    assert_eq!(widget["public_id"], before["public_id"]);

    assert_eq!(
        callgate.run(&["widget", "remove", "shop"]).success(),
        "removed widget shop\n"
    );
    assert_eq!(
        parse(&callgate.run(&["widget", "list", "--json"]).success()),
        json!([])
    );
}

fn unknown_names_are_refused(callgate: &Callgate) {
    add_trunk(callgate, "main");
    add_widget(callgate, "shop", "main");
    for args in [
        &["trunk", "show", "nope"][..],
        &["trunk", "update", "nope", "--port", "5070"],
        &["trunk", "remove", "nope"],
        &["trunk", "remove", "nope", "--force"],
        &[
            "widget",
            "add",
            "blog",
            "--trunk",
            "nope",
            "--destination",
            "100",
            "--origin",
            "https://a.example",
        ],
        &["widget", "update", "shop", "--trunk", "nope"],
    ] {
        callgate.refused(args, 2, "error: no trunk named 'nope'");
    }
    for args in [
        &["widget", "show", "nope"][..],
        &["widget", "update", "nope", "--destination", "200"],
        &["widget", "remove", "nope"],
        &["widget", "snippet", "nope"],
    ] {
        callgate.refused(args, 2, "error: no widget named 'nope'");
    }
    callgate.refused(&["calls", "show", "999"], 2, "error: no call record with id 999");
}

fn duplicate_names_are_refused(callgate: &Callgate) {
    add_trunk(callgate, "main");
    add_widget(callgate, "shop", "main");
    callgate.refused(
        &["trunk", "add", "main", "--host", "other.example"],
        2,
        "error: a trunk named 'main' already exists",
    );
    let args = [
        "widget",
        "add",
        "shop",
        "--trunk",
        "main",
        "--destination",
        "200",
        "--origin",
        "https://b.example",
    ];
    callgate.refused(&args, 2, "error: a widget named 'shop' already exists");
}

fn malformed_values_are_refused(callgate: &Callgate) {
    add_trunk(callgate, "main");
    add_widget(callgate, "shop", "main");
    let trunk_cases: &[(&[&str], &str)] = &[
        (
            &["--host", "pbx example"],
            "invalid value 'pbx example' for '--host <HOST>': a host is",
        ),
        (&["--host", "sip:pbx.example"], "for '--host <HOST>'"),
        (&["--host", "10.0.0.300"], "for '--host <HOST>'"),
        (
            &["--host", "pbx.example", "--port", "70000"],
            "invalid value '70000' for '--port <PORT>'",
        ),
        (&["--host", "pbx.example", "--port", "0"], "for '--port <PORT>'"),
        (
            &["--host", "pbx.example", "--port", "http"],
            "for '--port <PORT>'",
        ),
        (
            &["--host", "pbx.example", "--transport", "sctp"],
            "a transport is one of: udp, tcp, tls",
        ),
        (
            &["--host", "pbx.example", "--codecs", "opus"],
            "for '--codecs <CODECS>'",
        ),
        (
            &["--host", "pbx.example", "--outbound-proxy", "proxy:99999"],
            "for '--outbound-proxy <HOST[:PORT]>'",
        ),
        (
            &["--host", "pbx.example", "--password", "pw"],
            "required arguments were not provided: --username",
        ),
        (
            &["--host", "pbx.example", "--register-expiry", "10"],
            "60 to 86400",
        ),
        (
            &["--port", "5060"],
            "required arguments were not provided: --host <HOST>",
        ),
    ];
    for (flags, message) in trunk_cases {
        let mut args = vec!["trunk", "add", "other"];
        args.extend_from_slice(flags);
        callgate.refused(&args, 2, message);
    }
    callgate.refused(
        &["trunk", "add", "bad name", "--host", "pbx.example"],
        2,
        "invalid value 'bad name' for '<NAME>'",
    );
    callgate.refused(
        &["trunk", "update", "main", "--port", "70000"],
        2,
        "for '--port <PORT>'",
    );
    callgate.refused(
        &["trunk", "update", "main", "--host", "a/b"],
        2,
        "for '--host <HOST>'",
    );

    let widget_cases: &[(&str, &str, &str)] = &[
        ("--destination", "100@pbx", "for '--destination <DESTINATION>'"),
        ("--destination", "1 00", "for '--destination <DESTINATION>'"),
        ("--destination", "", "for '--destination <DESTINATION>'"),
        ("--origin", "http://shop.example", "an origin must use https://"),
        ("--origin", "https://shop.example/path", "no path"),
        ("--origin", "shop.example", "an origin starts with https://"),
        (
            "--origin",
            "https://shop.example:70000",
            "for '--origin <ORIGIN>'",
        ),
        ("--origin", "https://*.example.com", "for '--origin <ORIGIN>'"),
        ("--caller-id", "web site", "for '--caller-id <CALLER_ID>'"),
        ("--max-concurrent", "0", "a limit is a whole number"),
        ("--max-per-minute", "100001", "a limit is a whole number"),
    ];
    for (flag, value, message) in widget_cases {
        let mut args = vec![
            "widget",
            "add",
            "blog",
            "--trunk",
            "main",
            "--destination",
            "100",
            "--origin",
            "https://a.example",
        ];
        if let Some(position) = args.iter().position(|arg| arg == flag) {
            args[position + 1] = value;
        } else {
            args.extend_from_slice(&[flag, value]);
        }
        callgate.refused(&args, 2, message);
        callgate.refused(&["widget", "update", "shop", flag, value], 2, message);
    }
    let no_origin = ["widget", "add", "blog", "--trunk", "main", "--destination", "100"];
    callgate.refused(
        &no_origin,
        2,
        "required arguments were not provided: --origin <ORIGIN>",
    );
    callgate.refused(
        &["widget", "snippet", "shop", "--gateway", "javascript:alert(1)"],
        2,
        "the gateway URL is",
    );
    callgate.refused(&["calls", "list", "--limit", "0"], 2, "for '--limit <N>'");
}

fn removing_a_trunk_in_use_needs_force(callgate: &Callgate) {
    add_trunk(callgate, "main");
    add_trunk(callgate, "spare");
    add_widget(callgate, "shop", "main");
    add_widget(callgate, "blog", "main");
    add_widget(callgate, "other", "spare");

    let line = callgate.refused(
        &["trunk", "remove", "main"],
        2,
        "trunk 'main' is used by widgets: blog, shop",
    );
    assert!(line.ends_with("or use --force"), "{line}");

    let removed = callgate.run(&["trunk", "remove", "main", "--force"]).success();
    assert!(
        removed.starts_with("removed trunk main\ndisabled widgets now without a trunk: blog, shop"),
        "{removed}"
    );
    let trunks = parse(&callgate.run(&["trunk", "list", "--json"]).success());
    assert_eq!(
        trunks
            .as_array()
            .map(|trunks| trunks.iter().map(|trunk| &trunk["name"]).collect()),
        Some(vec![&json!("spare")])
    );
    let widgets = parse(&callgate.run(&["widget", "list", "--json"]).success());
    let state: Vec<(&Value, &Value, &Value)> = widgets
        .as_array()
        .expect("an array")
        .iter()
        .map(|widget| (&widget["name"], &widget["trunk"], &widget["enabled"]))
        .collect();
    assert_eq!(
        state,
        [
            (&json!("blog"), &Value::Null, &json!(false)),
            (&json!("other"), &json!("spare"), &json!(true)),
            (&json!("shop"), &Value::Null, &json!(false)),
        ]
    );

    callgate.refused(
        &["widget", "update", "shop", "--enable"],
        2,
        "widget 'shop' has no trunk",
    );
    callgate
        .run(&["widget", "update", "shop", "--trunk", "spare", "--enable"])
        .success();
    let shop = parse(&callgate.run(&["widget", "show", "shop", "--json"]).success());
    assert_eq!(
        (&shop["trunk"], &shop["enabled"]),
        (&json!("spare"), &json!(true))
    );

    callgate.run(&["widget", "remove", "other"]).success();
    callgate.run(&["widget", "remove", "shop"]).success();
    assert_eq!(
        callgate.run(&["trunk", "remove", "spare"]).success(),
        "removed trunk spare\n"
    );
}

/// Records two calls through the library, as the server will.
fn record_calls(callgate: &Callgate) -> (i64, i64) {
    let url = callgate.database_url().to_owned();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async move {
        let database = Database::connect(&url).await.expect("connect");
        let widget = database
            .widgets()
            .by_name(&"shop".parse().expect("a name"))
            .await
            .expect("widget");
        let trunk = widget.trunk.clone().expect("a trunk");
        let call = NewCall {
            widget: Some((widget.id, widget.name.clone())),
            dialled: Some(widget.public_id.to_string()),
            trunk: Some((trunk.id, trunk.name)),
            source_ip: "203.0.113.9".parse().expect("an address"),
            user_agent: Some("JsSIP 3.10".to_owned()),
            destination: Some(widget.destination.clone()),
            started_at: Timestamp::from_unix_millis(1_763_732_100_000),
        };
        let first = database.calls().start(call.clone()).await.expect("start");
        database
            .calls()
            .answered(first, Timestamp::from_unix_millis(1_763_732_102_000))
            .await
            .expect("answer");
        let end = CallEnd {
            ended_at: Timestamp::from_unix_millis(1_763_732_132_500),
            end_cause: "bye".to_owned(),
            ended_by: EndedBy::Browser,
            trunk: None,
            browser: LegSummary {
                final_status: Some(200),
                codec: Some("opus".to_owned()),
                packets_sent: 1500,
                packets_received: 1490,
                packets_lost: 10,
                bytes_sent: 240_000,
                bytes_received: 238_400,
                jitter_us: Some(1_250),
                rtt_us: Some(3_400),
            },
            pbx: LegSummary {
                final_status: Some(200),
                codec: Some("pcmu".to_owned()),
                packets_sent: 1490,
                packets_received: 1500,
                packets_lost: 0,
                bytes_sent: 238_400,
                bytes_received: 240_000,
                jitter_us: Some(800),
                rtt_us: None,
            },
        };
        database.calls().finish(first, end).await.expect("finish");
        let later = NewCall {
            started_at: Timestamp::from_unix_millis(1_763_732_200_000),
            ..call
        };
        let second = database.calls().start(later).await.expect("start");
        (first.0, second.0)
    })
}

/// Records an attempt refused before any widget was found, as the server does for an unknown public id.
fn record_unknown_widget_attempt(callgate: &Callgate) -> i64 {
    let url = callgate.database_url().to_owned();
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(async move {
        let database = Database::connect(&url).await.expect("connect");
        let attempt = NewCall {
            widget: None,
            dialled: Some("no-such-widget".to_owned()),
            trunk: None,
            source_ip: "198.51.100.4".parse().expect("an address"),
            user_agent: None,
            destination: None,
            started_at: Timestamp::from_unix_millis(1_763_732_300_000),
        };
        let id = database.calls().start(attempt).await.expect("start");
        let end = CallEnd {
            ended_at: Timestamp::from_unix_millis(1_763_732_300_001),
            end_cause: "unknown_widget".to_owned(),
            ended_by: EndedBy::Gateway,
            trunk: None,
            browser: LegSummary {
                final_status: Some(404),
                ..LegSummary::default()
            },
            pbx: LegSummary::default(),
        };
        database.calls().finish(id, end).await.expect("finish");
        id.0
    })
}

fn call_records_are_listed_and_shown(callgate: &Callgate) {
    add_trunk(callgate, "main");
    add_widget(callgate, "shop", "main");
    assert_eq!(
        parse(&callgate.run(&["calls", "list", "--json"]).success()),
        json!([])
    );
    let (first, second) = record_calls(callgate);

    let calls = parse(&callgate.run(&["calls", "list", "--json"]).success());
    let ids: Vec<&Value> = calls
        .as_array()
        .expect("an array")
        .iter()
        .map(|call| &call["id"])
        .collect();
    assert_eq!(ids, [&json!(second), &json!(first)]);
    let shop_id = parse(&callgate.run(&["widget", "show", "shop", "--json"]).success())["public_id"].clone();
    let expected = json!({
        "id": first, "widget": "shop", "dialled": shop_id, "trunk": "main", "destination": "100", "source_ip": "203.0.113.9",
        "user_agent": "JsSIP 3.10", "started_at": "2025-11-21T13:35:00.000Z",
        "answered_at": "2025-11-21T13:35:02.000Z", "ended_at": "2025-11-21T13:35:32.500Z", "talk_ms": 30_500,
        "end_cause": "bye", "ended_by": "browser",
        "browser": {"final_status": 200, "codec": "opus", "packets_sent": 1500, "packets_received": 1490, "packets_lost": 10,
            "bytes_sent": 240_000, "bytes_received": 238_400, "jitter_ms": 1.25, "rtt_ms": 3.4},
        "pbx": {"final_status": 200, "codec": "pcmu", "packets_sent": 1490, "packets_received": 1500, "packets_lost": 0,
            "bytes_sent": 238_400, "bytes_received": 240_000, "jitter_ms": 0.8, "rtt_ms": null},
    });
    assert_eq!(calls[1], expected);
    assert_eq!(calls[0]["ended_at"], Value::Null);
    let first_text = first.to_string();
    assert_eq!(
        parse(&callgate.run(&["calls", "show", &first_text, "--json"]).success()),
        expected
    );

    let limited = parse(
        &callgate
            .run(&["calls", "list", "--limit", "1", "--json"])
            .success(),
    );
    assert_eq!(limited.as_array().map(Vec::len), Some(1));
    let table = callgate.run(&["calls", "list"]).success();
    let row = table
        .lines()
        .find(|line| line.starts_with(&format!("{first_text} ")))
        .unwrap_or_default();
    assert!(
        row.contains("2025-11-21T13:35:00.000Z") && row.contains("30.500 s") && row.contains("browser"),
        "{table}"
    );
    let shown = callgate.run(&["calls", "show", &first_text]).success();
    assert!(shown.contains("talk time:   30.500 s\n"), "{shown}");
    assert!(
        shown.contains("bytes sent 240000 received 238400, jitter 1.2 ms, rtt 3.4 ms"),
        "{shown}"
    );

    // An attempt no widget took: listed first, with the dialled id where the widget's name would be.
    let attempt = record_unknown_widget_attempt(callgate);
    let calls = parse(&callgate.run(&["calls", "list", "--json"]).success());
    assert_eq!(calls[0]["id"], json!(attempt));
    for (key, value) in [
        ("widget", Value::Null),
        ("dialled", json!("no-such-widget")),
        ("destination", Value::Null),
        ("trunk", Value::Null),
        ("source_ip", json!("198.51.100.4")),
        ("end_cause", json!("unknown_widget")),
        ("ended_by", json!("gateway")),
        ("talk_ms", Value::Null),
    ] {
        assert_eq!(calls[0][key], value, "{key}: {:#}", calls[0]);
    }
    assert_eq!(calls[0]["browser"]["final_status"], json!(404));
    let table = callgate.run(&["calls", "list"]).success();
    let row = table
        .lines()
        .find(|line| line.starts_with(&format!("{attempt} ")))
        .unwrap_or_default();
    for cell in ["(no-such-widget)", "198.51.100.4", "gateway", "unknown_widget"] {
        assert!(row.contains(cell), "{cell} not in {row:?}\n{table}");
    }
    let shown = callgate.run(&["calls", "show", &attempt.to_string()]).success();
    for line in [
        "widget:      -\n",
        "dialled:     no-such-widget\n",
        "destination: -\n",
        "end cause:   unknown_widget\n",
        "browser leg: status 404,",
    ] {
        assert!(shown.contains(line), "{line:?} not in\n{shown}");
    }
}

#[test]
fn a_new_sqlite_file_is_created_and_migrated_on_first_use() {
    let callgate = Callgate::unmigrated(TestDatabase::sqlite());
    assert_eq!(
        parse(&callgate.run(&["trunk", "list", "--json"]).success()),
        json!([])
    );
    add_trunk(&callgate, "main");
    let path = callgate.database_url().trim_start_matches("sqlite://").to_owned();
    assert!(std::path::Path::new(&path).is_file(), "{path}");
}

#[test]
fn postgres_needs_callgate_migrate() {
    let callgate = Callgate::unmigrated(TestDatabase::postgres());
    let line = callgate.run(&["trunk", "list"]).failure(1);
    assert_eq!(
        line,
        "error: database schema is not up to date: run `callgate migrate`"
    );
    assert_eq!(
        callgate.run(&["migrate"]).success(),
        "migrated the postgres database\n"
    );
    assert_eq!(
        parse(&callgate.run(&["trunk", "list", "--json"]).success()),
        json!([])
    );
}

#[test]
fn database_urls_are_checked() {
    let line = callgate(&["--database", "mysql://db.example/x", "trunk", "list"]).failure(2);
    assert_eq!(
        line,
        "error: database URL must start with sqlite:// or postgres:// (got scheme 'mysql')"
    );
    let line = callgate(&[
        "--database",
        "postgres://user:hunter2@127.0.0.1:1/x",
        "trunk",
        "list",
    ])
    .failure(1);
    assert!(
        line.starts_with("error: cannot open database postgres://user@127.0.0.1:1/x"),
        "{line}"
    );
    assert!(!line.contains("hunter2"));
}

#[test]
fn check_config_prints_the_effective_config_or_one_error() {
    let directory = tempfile::tempdir().expect("a temporary directory");
    let good = directory.path().join("good.toml");
    std::fs::write(&good, "[log]\nlevel = \"debug\"\n").expect("write");
    let good = good.to_str().expect("a UTF-8 path");
    let printed = callgate(&[
        "--config",
        good,
        "--database",
        "postgres://gw:hunter2@db.example/callgate",
        "check-config",
    ])
    .success();
    let config: toml::Table = printed.parse().expect("check-config prints TOML");
    assert_eq!(config["log"]["level"].as_str(), Some("debug"));
    assert_eq!(
        config["database"]["url"].as_str(),
        Some("postgres://gw:***@db.example/callgate")
    );
    assert!(!printed.contains("hunter2"));

    let bad = directory.path().join("bad.toml");
    std::fs::write(&bad, "[http]\nlisten = \"nonsense\"\n").expect("write");
    let bad = bad.to_str().expect("a UTF-8 path");
    let line = callgate(&["--config", bad, "check-config"]).failure(2);
    assert!(
        line.contains("bad.toml") && line.contains("http.listen"),
        "{line}"
    );
    let line = callgate(&[
        "--config",
        bad,
        "--database",
        "sqlite://unused.db",
        "trunk",
        "list",
    ])
    .failure(2);
    assert!(line.contains("http.listen"), "{line}");
}

/// A TCP port nothing listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("a local address").port()
}

/// The status line of `GET path`, or `None` while nothing answers.
fn http_status(port: u16, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    response.lines().next().map(str::to_owned)
}

#[test]
fn serve_migrates_the_database_then_stops_on_sigterm() {
    let callgate = Callgate::unmigrated(TestDatabase::postgres());
    let directory = tempfile::tempdir().expect("a temporary directory");
    let config = directory.path().join("serve.toml");
    let http_port = free_port();
    let text = format!(
        "[http]\nlisten = \"127.0.0.1:{http_port}\"\n[sip]\nudp_listen = \"\"\ntcp_listen = \"127.0.0.1:{}\"\n\
         [demo]\nenabled = false\n[log]\nformat = \"json\"\n",
        free_port()
    );
    std::fs::write(&config, text).expect("write the config");
    let mut server = callgate.spawn(&["--config", config.to_str().expect("a UTF-8 path"), "serve"]);

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut status = None;
    while status.is_none() && Instant::now() < deadline {
        if let Ok(Some(exit)) = server.try_wait() {
            panic!("serve exited early with {exit}");
        }
        std::thread::sleep(Duration::from_millis(50));
        status = http_status(http_port, "/readyz");
    }
    let terminated = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(server.id().to_string())
        .status();
    assert!(
        terminated.is_ok_and(|status| status.success()),
        "kill -TERM failed"
    );
    let output = server.wait_with_output().expect("serve exits");
    let log = String::from_utf8_lossy(&output.stderr);
    assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"), "log: {log}");
    assert!(
        output.status.success(),
        "serve exited with {}: {log}",
        output.status
    );
    let ready = log
        .lines()
        .find(|line| line.contains("database ready"))
        .unwrap_or_else(|| panic!("{log}"));
    assert_eq!(parse(ready)["fields"]["backend"], json!("postgres"), "{ready}");

    assert_eq!(
        parse(&callgate.run(&["trunk", "list", "--json"]).success()),
        json!([])
    );
}

fn widget_tokens_verify_with_the_widget_secret(callgate: &Callgate) {
    add_trunk(callgate, "pbx");
    add_widget(callgate, "open", "pbx");
    let message = "error: widget 'open' does not require tokens";
    let line = callgate.refused(&["widget", "token", "open", "--ttl", "60"], 2, message);
    assert!(line.contains("--require-token"), "{line}");

    add_signed_widget(callgate);
    let token = callgate
        .run(&["widget", "token", "signed", "--ttl", "60"])
        .success();
    let token = token.trim();
    let shown = parse(&callgate.run(&["widget", "show", "signed", "--json"]).success());
    let public_id = shown["public_id"].as_str().expect("a public id");
    let secret = widget_secret(callgate, "signed");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert_eq!(
        callgate::admission::verify_token(Some(token), public_id, &secret, now),
        Ok(())
    );
    assert!(callgate::admission::verify_token(Some(token), public_id, &secret, now + 61).is_err());
    assert!(
        !token.contains(&secret),
        "the secret must not leak into the token"
    );
    callgate.refused(&["widget", "token", "signed", "--ttl", "0"], 2, "error:");
}

fn widget_secrets_are_exported_only_on_request_and_logged(callgate: &Callgate) {
    add_trunk(callgate, "pbx");
    add_widget(callgate, "open", "pbx");
    let line = callgate.refused(
        &["widget", "secret", "open"],
        2,
        "error: widget 'open' does not require tokens",
    );
    assert!(line.contains("--require-token"), "{line}");
    callgate.refused(
        &["widget", "secret", "missing"],
        2,
        "error: no widget named 'missing'",
    );

    add_signed_widget(callgate);
    let secret = widget_secret(callgate, "signed");
    let outcome = callgate.run(&["widget", "secret", "signed"]);
    let stderr = outcome.stderr().to_owned();
    assert_eq!(
        outcome.success(),
        format!("{secret}\n"),
        "stdout is the secret alone"
    );
    let audit: Vec<&str> = stderr.lines().collect();
    assert_eq!(audit.len(), 1, "{stderr}");
    assert!(
        audit[0].contains("WARN")
            && audit[0].contains("widget secret exported")
            && audit[0].contains("widget=signed"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(&secret),
        "the secret must not reach the log: {stderr}"
    );

    // Rotating changes what is exported; no other command prints it.
    callgate
        .run(&["widget", "update", "signed", "--rotate-secret"])
        .success();
    let rotated = callgate.run(&["widget", "secret", "signed"]).success();
    assert_ne!(rotated.trim(), secret);
    for args in [
        &["widget", "show", "signed"][..],
        &["widget", "show", "signed", "--json"],
        &["widget", "list"],
        &["widget", "list", "--json"],
    ] {
        assert!(!callgate.run(args).success().contains(rotated.trim()), "{args:?}");
    }
}
