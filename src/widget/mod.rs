//! The click-to-call widget as the gateway serves it: the bundled script for `/widget.js`, the `/demo`
//! page hosting a widget, and the embed snippet a website owner pastes into their pages.
//!
//! The script is built from `widget/` (plain JavaScript plus JsSIP from npm, bundled by esbuild) by the
//! crate's `build.rs` at compile time, so the binary carries it and nothing is fetched at run time. The
//! widget calls `sip:<public id>@<gateway host>` over `wss://<gateway host>/ws`, derived from the URL the
//! script itself was loaded from.

/// The bundled widget script (minified IIFE with JsSIP inside), served as `/widget.js` with
/// `Content-Type: text/javascript`.
pub const WIDGET_JS: &str = include_str!(concat!(env!("OUT_DIR"), "/widget.js"));

/// The tag of the element the widget adds to a page; everything else lives in its shadow root.
pub const HOST_ELEMENT: &str = "callgate-widget";

/// A standalone page for `/demo` hosting the widget `public_id` (normally the built-in demo widget wired to
/// the echo endpoint), with a short explanation of what a click does.
pub fn demo_page(public_id: &str) -> String {
    let public_id = escape_html(public_id);
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>callgate demo</title>
<style>
  body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; padding: 0 1.5rem;
    color: #202124; }}
  h1 {{ font-size: 1.6rem; }}
  code {{ background: #f1f3f4; padding: 0.1em 0.3em; border-radius: 4px; }}
</style>
</head>
<body>
<h1>callgate demo</h1>
<p>Click <strong>Call</strong> (bottom right) and allow the microphone: you will hear yourself through the
gateway's echo endpoint, a moment late. Your voice goes the whole way a real call goes: WebRTC from this
browser to the gateway, Opus transcoded to G.711, SIP and RTP to the echo endpoint, and back.</p>
<p>Use headphones to avoid feedback. The keypad sends DTMF; the red button (or <kbd>Escape</kbd>) hangs up.</p>
<p>A website embeds the same button with <code>callgate widget snippet NAME</code>.</p>
<script src="/widget.js" data-widget="{public_id}" data-label="Call" async></script>
</body>
</html>
"#
    )
}

/// The HTML a website pastes into its pages to show the widget `public_id`, loading the script from
/// `gateway_base_url` (the gateway's public `https://host[:port]`; a trailing `/` is ignored). A widget that
/// requires a signed token gets a `data-token` placeholder and a comment on how to fill it.
pub fn snippet(gateway_base_url: &str, public_id: &str, token_required: bool) -> String {
    let script_url = escape_html(&format!("{}/widget.js", gateway_base_url.trim_end_matches('/')));
    let public_id = escape_html(public_id);
    if token_required {
        format!(
            "<!-- callgate click-to-call button. This widget requires a signed token: your website's server \
             must\n     put a fresh one in data-token on each page view (`callgate widget token` prints one \
             to try). -->\n\
             <script src=\"{script_url}\" data-widget=\"{public_id}\" data-token=\"TOKEN\" async></script>\n"
        )
    } else {
        format!(
            "<!-- callgate click-to-call button -->\n\
             <script src=\"{script_url}\" data-widget=\"{public_id}\" async></script>\n"
        )
    }
}

/// Escapes text for HTML content and for quoted attribute values.
fn escape_html(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            other => escaped.push(other),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str = r#"x" onload="alert(1)'<script>&"#;
    const HOSTILE_ESCAPED: &str = "x&quot; onload=&quot;alert(1)&#39;&lt;script&gt;&amp;";

    #[test]
    fn embedded_script_is_the_real_bundle() {
        assert!(
            WIDGET_JS.len() > 50_000,
            "{} bytes is too small for JsSIP",
            WIDGET_JS.len()
        );
        assert!(WIDGET_JS.contains("JsSIP"), "JsSIP is bundled");
        assert!(WIDGET_JS.contains(HOST_ELEMENT), "our host element is in it");
        assert!(WIDGET_JS.contains("X-Callgate-Token"));
        assert!(
            !WIDGET_JS.contains("require(\"jssip\")") && !WIDGET_JS.contains("from\"jssip\""),
            "JsSIP is inlined, not imported"
        );
        assert!(!WIDGET_JS.contains("sourceMappingURL"), "no map to fetch");
    }

    #[test]
    fn snippet_without_token() {
        assert_eq!(
            snippet("https://gw.example.com/", "Ab3-x_9", false),
            "<!-- callgate click-to-call button -->\n\
             <script src=\"https://gw.example.com/widget.js\" data-widget=\"Ab3-x_9\" async></script>\n"
        );
    }

    #[test]
    fn snippet_with_token_has_a_placeholder_and_says_how_to_fill_it() {
        let html = snippet("http://127.0.0.1:8080", "abc", true);
        assert!(html.contains(
            "<script src=\"http://127.0.0.1:8080/widget.js\" data-widget=\"abc\" data-token=\"TOKEN\" async>"
        ));
        assert!(html.contains("your website's server"));
        assert!(html.contains("data-token"));
    }

    #[test]
    fn snippet_escapes_its_inputs() {
        let html = snippet(HOSTILE, HOSTILE, false);
        assert!(html.contains(&format!("data-widget=\"{HOSTILE_ESCAPED}\"")));
        assert!(html.contains(&format!("src=\"{HOSTILE_ESCAPED}/widget.js\"")));
        assert!(!html.contains("<script>"));
        // Every quote in the output delimits one of the three attribute values.
        assert_eq!(html.matches('"').count(), 4);
    }

    #[test]
    fn demo_page_hosts_the_widget_and_escapes_the_id() {
        let html = demo_page("demo-Id_1");
        assert!(html.starts_with("<!doctype html>"));
        assert!(html.contains("<script src=\"/widget.js\" data-widget=\"demo-Id_1\""));
        assert!(html.contains("hear yourself"));
        assert!(html.contains("echo endpoint"));

        let html = demo_page(HOSTILE);
        assert!(html.contains(&format!("data-widget=\"{HOSTILE_ESCAPED}\"")));
        assert_eq!(html.matches("<script").count(), 1);
    }

    #[test]
    fn escape_html_leaves_plain_text_alone() {
        assert_eq!(escape_html("plain text 123"), "plain text 123");
        assert_eq!(escape_html("<&>\"'"), "&lt;&amp;&gt;&quot;&#39;");
    }
}
