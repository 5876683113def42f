-- The rest of each leg's media figures in the call record: payload bytes both ways, the interarrival jitter
-- of the stream received from that side and the RTCP round-trip time to it, in microseconds (NULL when
-- never measured). Keep in step with ../sqlite/0003_leg_media_stats.sql.

ALTER TABLE calls
    ADD COLUMN browser_bytes_sent BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN browser_bytes_received BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN browser_jitter_us BIGINT,
    ADD COLUMN browser_rtt_us BIGINT,
    ADD COLUMN pbx_bytes_sent BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN pbx_bytes_received BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN pbx_jitter_us BIGINT,
    ADD COLUMN pbx_rtt_us BIGINT;
