//! Optional: the gateway's own packet counters from a Prometheus text endpoint (`--metrics`).
//!
//! Loss the browser can see is only the loss on the last hop (the gateway conceals what it lost on the
//! way in and keeps sending every 20 ms). The gateway's counters of packets received and lost per leg
//! cover the other hops, so when the gateway publishes them their growth over the steady phase is
//! reported too. Any series named `…packets_received_total{leg="…"}` and `…packets_lost_total{leg="…"}`
//! is used; a gateway without them simply has no such figures.
//!
//! The gateway's processing delay histogram (`…processing_seconds_bucket{path="…",le="…"}`) is read the
//! same way: the growth of its buckets over the window gives the window's own p50 and p99 per path,
//! interpolated within a bucket as Prometheus' `histogram_quantile` does.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Longest a scrape may take.
const SCRAPE_LIMIT: Duration = Duration::from_secs(5);
/// Largest response read.
const MAX_RESPONSE_BYTES: u64 = 4 * 1024 * 1024;

/// Why the metrics endpoint could not be read.
#[derive(Debug, Error)]
pub enum ScrapeError {
    /// Only `http://host:port/path` is supported.
    #[error("metrics url must be http://HOST:PORT/PATH: {0}")]
    Url(String),
    /// Connecting, sending or reading failed.
    #[error("metrics: {0}")]
    Io(#[from] std::io::Error),
    /// The endpoint did not answer in time.
    #[error("metrics: no answer within {0:?}")]
    Timeout(Duration),
    /// The answer was not `200` with a body.
    #[error("metrics: unexpected response: {0}")]
    Response(String),
}

/// The packet counters of one leg, as the gateway counts them.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct LegCounters {
    /// Packets received on the leg.
    pub received: f64,
    /// Packets found missing on arrival.
    pub lost: f64,
}

impl LegCounters {
    /// Lost over expected, in percent.
    pub fn loss_percent(&self) -> f64 {
        let expected = self.received + self.lost;
        if expected <= 0.0 {
            return 0.0;
        }
        100.0 * self.lost.max(0.0) / expected
    }
}

/// Counters per leg name.
pub type LegTable = BTreeMap<String, LegCounters>;

/// A cumulative histogram: (upper bound in seconds, observations at or below it), ascending, `+Inf`
/// last.
pub type Buckets = Vec<(f64, f64)>;

/// What one scrape found.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GatewayMetrics {
    /// Packet counters per leg.
    pub legs: LegTable,
    /// The processing delay histogram per path (`passthrough`, `transcoding`).
    pub processing: BTreeMap<String, Buckets>,
}

/// The processing delay of one path over the window, from the gateway's histogram.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct ProcessingDelay {
    /// Packets (passthrough) or ticks (transcoding) measured.
    pub count: f64,
    /// Median, in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile, in milliseconds.
    pub p99_ms: f64,
}

/// GETs `url` and returns the per-leg packet counters and processing histograms found in it.
pub async fn scrape(url: &str) -> Result<GatewayMetrics, ScrapeError> {
    let body = tokio::time::timeout(SCRAPE_LIMIT, get(url))
        .await
        .map_err(|_| ScrapeError::Timeout(SCRAPE_LIMIT))??;
    Ok(GatewayMetrics {
        legs: leg_counters(&body),
        processing: processing_histograms(&body),
    })
}

/// Growth of everything from `before` to `after`.
pub fn metrics_growth(before: &GatewayMetrics, after: &GatewayMetrics) -> GatewayMetrics {
    let processing = after
        .processing
        .iter()
        .map(|(path, end)| {
            let start = before.processing.get(path);
            let grown = end
                .iter()
                .map(|&(bound, count)| {
                    let earlier = start
                        .and_then(|buckets| buckets.iter().find(|(b, _)| *b == bound))
                        .map_or(0.0, |(_, count)| *count);
                    (bound, count - earlier)
                })
                .collect();
            (path.clone(), grown)
        })
        .collect();
    GatewayMetrics {
        legs: growth(&before.legs, &after.legs),
        processing,
    }
}

/// The p50 and p99 of each path's histogram; paths without observations are left out.
pub fn processing_delays(processing: &BTreeMap<String, Buckets>) -> BTreeMap<String, ProcessingDelay> {
    processing
        .iter()
        .filter_map(|(path, buckets)| {
            let count = buckets.last()?.1;
            (count > 0.0).then(|| {
                let ms = |q| quantile(buckets, q).map_or(f64::NAN, |seconds| seconds * 1000.0);
                let delay = ProcessingDelay {
                    count,
                    p50_ms: ms(0.5),
                    p99_ms: ms(0.99),
                };
                (path.clone(), delay)
            })
        })
        .collect()
}

/// The `q` quantile of a cumulative histogram, interpolated linearly within its bucket (from 0 for the
/// first); in the `+Inf` bucket, the largest finite bound.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower.0);
            }
            let width = count - lower.1;
            let within = if width > 0.0 {
                (rank - lower.1) / width
            } else {
                1.0
            };
            return Some(lower.0 + (bound - lower.0) * within);
        }
        lower = (bound, count);
    }
    Some(lower.0)
}

/// The `…processing_seconds_bucket` series with a `path` label, per path.
pub fn processing_histograms(text: &str) -> BTreeMap<String, Buckets> {
    let mut paths: BTreeMap<String, Buckets> = BTreeMap::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(char::is_whitespace) else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let Some((name, labels)) = series.trim().split_once('{') else {
            continue;
        };
        if !name.ends_with("processing_seconds_bucket") {
            continue;
        }
        let (Some(path), Some(bound)) = (label(labels, "path"), label(labels, "le")) else {
            continue;
        };
        let bound = if bound == "+Inf" {
            f64::INFINITY
        } else {
            match bound.parse::<f64>() {
                Ok(bound) => bound,
                Err(_) => continue,
            }
        };
        paths.entry(path).or_default().push((bound, value));
    }
    for buckets in paths.values_mut() {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    paths
}

/// Growth of each leg's counters from `before` to `after`.
pub fn growth(before: &LegTable, after: &LegTable) -> LegTable {
    after
        .iter()
        .map(|(leg, end)| {
            let start = before.get(leg).copied().unwrap_or_default();
            let grown = LegCounters {
                received: end.received - start.received,
                lost: end.lost - start.lost,
            };
            (leg.clone(), grown)
        })
        .collect()
}

async fn get(url: &str) -> Result<String, ScrapeError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ScrapeError::Url(url.to_owned()))?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return Err(ScrapeError::Url(url.to_owned()));
    }
    let mut stream = TcpStream::connect(authority).await?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    stream.take(MAX_RESPONSE_BYTES).read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| ScrapeError::Response("no header end".to_owned()))?;
    let status_line = head.lines().next().unwrap_or_default();
    if status_line.split_whitespace().nth(1) != Some("200") {
        return Err(ScrapeError::Response(status_line.to_owned()));
    }
    Ok(body.to_owned())
}

/// The `packets_received_total` and `packets_lost_total` series with a `leg` label.
pub fn leg_counters(text: &str) -> LegTable {
    let mut legs = LegTable::new();
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(char::is_whitespace) else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let Some((name, labels)) = series.trim().split_once('{') else {
            continue;
        };
        let Some(leg) = label(labels, "leg") else {
            continue;
        };
        let counters = if name.ends_with("packets_received_total") {
            &mut legs.entry(leg).or_default().received
        } else if name.ends_with("packets_lost_total") {
            &mut legs.entry(leg).or_default().lost
        } else {
            continue;
        };
        *counters += value;
    }
    legs
}

/// The value of label `name` in `a="x",b="y"}` (escapes are not expected in leg names).
fn label(labels: &str, name: &str) -> Option<String> {
    let labels = labels.trim_end_matches('}');
    labels.split(',').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key.trim() == name).then(|| value.trim().trim_matches('"').to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP callgate_rtp_packets_received_total RTP packets received\n\
        # TYPE callgate_rtp_packets_received_total counter\n\
        callgate_rtp_packets_received_total{leg=\"webrtc\"} 1000\n\
        callgate_rtp_packets_received_total{leg=\"pbx\"} 990\n\
        callgate_rtp_packets_lost_total{leg=\"webrtc\"} 0\n\
        callgate_rtp_packets_lost_total{leg=\"pbx\"} 10\n\
        callgate_rtp_packets_sent_total{leg=\"pbx\"} 1000\n\
        callgate_active_calls 3\n";

    #[test]
    fn reads_the_leg_counters() {
        let legs = leg_counters(TEXT);
        assert_eq!(legs.len(), 2);
        assert_eq!(
            legs["pbx"],
            LegCounters {
                received: 990.0,
                lost: 10.0
            }
        );
        assert!((legs["pbx"].loss_percent() - 1.0).abs() < 1e-9);
        assert_eq!(legs["webrtc"].loss_percent(), 0.0);
    }

    #[test]
    fn growth_between_two_scrapes() {
        let before = leg_counters(TEXT);
        let after = leg_counters(&TEXT.replace("} 990", "} 1990").replace("} 10\n", "} 12\n"));
        let grown = growth(&before, &after);
        assert_eq!(
            grown["pbx"],
            LegCounters {
                received: 1000.0,
                lost: 2.0
            }
        );
        assert_eq!(grown["webrtc"].received, 0.0);
    }

    const HISTOGRAM: &str = "# TYPE callgate_media_processing_seconds histogram\n\
        callgate_media_processing_seconds_bucket{path=\"transcoding\",le=\"0.0001\"} 10\n\
        callgate_media_processing_seconds_bucket{path=\"transcoding\",le=\"0.001\"} 90\n\
        callgate_media_processing_seconds_bucket{path=\"transcoding\",le=\"0.01\"} 100\n\
        callgate_media_processing_seconds_bucket{path=\"transcoding\",le=\"+Inf\"} 100\n\
        callgate_media_processing_seconds_sum{path=\"transcoding\"} 0.05\n\
        callgate_media_processing_seconds_bucket{path=\"passthrough\",le=\"0.0001\"} 0\n\
        callgate_media_processing_seconds_bucket{path=\"passthrough\",le=\"+Inf\"} 0\n";

    #[test]
    fn processing_quantiles_interpolate_within_the_bucket() {
        let histograms = processing_histograms(HISTOGRAM);
        assert_eq!(histograms["transcoding"].len(), 4);
        let delays = processing_delays(&histograms);
        assert!(!delays.contains_key("passthrough"), "no observations");
        let transcoding = delays["transcoding"];
        assert_eq!(transcoding.count, 100.0);
        // Rank 50 of 100: 40 of the 80 in (0.1 ms, 1 ms].
        assert!((transcoding.p50_ms - 0.55).abs() < 1e-9, "{transcoding:?}");
        // Rank 99: 9 of the 10 in (1 ms, 10 ms].
        assert!((transcoding.p99_ms - 9.1).abs() < 1e-9, "{transcoding:?}");
        assert_eq!(quantile(&[(0.001, 0.0), (f64::INFINITY, 4.0)], 0.5), Some(0.001));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn processing_growth_is_the_window_only() {
        let before = GatewayMetrics {
            legs: LegTable::new(),
            processing: processing_histograms(HISTOGRAM),
        };
        let later = HISTOGRAM
            .replace("} 10\n", "} 1010\n")
            .replace("} 90\n", "} 1090\n")
            .replace("} 100\n", "} 1100\n");
        let after = GatewayMetrics {
            legs: LegTable::new(),
            processing: processing_histograms(&later),
        };
        let delays = processing_delays(&metrics_growth(&before, &after).processing);
        let transcoding = delays["transcoding"];
        assert_eq!(transcoding.count, 1000.0);
        assert!(transcoding.p99_ms <= 0.1, "{transcoding:?}");
    }

    #[tokio::test]
    async fn scrapes_over_http_and_refuses_other_urls() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for status in ["200 OK", "404 Not Found"] {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut request = [0_u8; 1024];
                let _ = stream.read(&mut request).await.unwrap();
                let response = format!("HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n\r\n{TEXT}");
                stream.write_all(response.as_bytes()).await.unwrap();
            }
        });
        let url = format!("http://{address}/metrics");
        assert_eq!(scrape(&url).await.unwrap().legs.len(), 2);
        assert!(matches!(scrape(&url).await, Err(ScrapeError::Response(_))));
        assert!(matches!(
            scrape("https://example.test/metrics").await,
            Err(ScrapeError::Url(_))
        ));
    }
}
