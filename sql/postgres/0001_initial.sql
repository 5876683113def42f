-- callgate schema, PostgreSQL dialect. Keep in step with ../sqlite/0001_initial.sql: the same tables, columns
-- and constraints, so that the repositories' single SQL text runs on both. Times are unix milliseconds.

CREATE TABLE trunks (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            TEXT    NOT NULL UNIQUE,
    host            TEXT    NOT NULL,
    port            BIGINT  NOT NULL CHECK (port BETWEEN 1 AND 65535),
    transport       TEXT    NOT NULL CHECK (transport IN ('udp', 'tcp', 'tls')),
    outbound_proxy  TEXT,
    auth_username   TEXT,
    auth_password   TEXT,
    auth_realm      TEXT,
    register        BOOLEAN NOT NULL,
    register_expiry BIGINT  NOT NULL CHECK (register_expiry BETWEEN 60 AND 86400),
    -- Comma-separated, most preferred first: 'pcmu,pcma'.
    codecs          TEXT    NOT NULL,
    -- Failover order: lower is tried first.
    priority        BIGINT  NOT NULL CHECK (priority BETWEEN 0 AND 65535),
    enabled         BOOLEAN NOT NULL,
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    CHECK ((auth_username IS NULL) = (auth_password IS NULL)),
    CHECK (auth_realm IS NULL OR auth_username IS NOT NULL)
);

CREATE TABLE widgets (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    public_id      TEXT    NOT NULL UNIQUE,
    name           TEXT    NOT NULL UNIQUE,
    -- NULL once `trunk remove --force` removed the trunk; such a widget stays disabled until given one.
    trunk_id       BIGINT  REFERENCES trunks (id) ON DELETE SET NULL,
    destination    TEXT    NOT NULL,
    -- Space-separated origins, each exactly as a browser sends it: 'https://a.example https://b.example:8443'.
    origins        TEXT    NOT NULL,
    caller_id      TEXT,
    max_concurrent BIGINT  NOT NULL CHECK (max_concurrent >= 1),
    max_per_minute BIGINT  NOT NULL CHECK (max_per_minute >= 1),
    -- Token-signing secret (base64url); NULL when the widget does not require tokens.
    secret         TEXT,
    enabled        BOOLEAN NOT NULL,
    created_at     BIGINT  NOT NULL,
    updated_at     BIGINT  NOT NULL,
    CHECK (trunk_id IS NOT NULL OR NOT enabled)
);

CREATE INDEX widgets_trunk_id ON widgets (trunk_id);

-- One row per call (CDR). Widget and trunk names are copied so that records outlive the rows they name.
CREATE TABLE calls (
    id                       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    widget_id                BIGINT  REFERENCES widgets (id) ON DELETE SET NULL,
    widget_name              TEXT    NOT NULL,
    trunk_id                 BIGINT  REFERENCES trunks (id) ON DELETE SET NULL,
    trunk_name               TEXT,
    source_ip                TEXT    NOT NULL,
    user_agent               TEXT,
    destination              TEXT    NOT NULL,
    started_at               BIGINT  NOT NULL,
    answered_at              BIGINT,
    ended_at                 BIGINT,
    end_cause                TEXT,
    ended_by                 TEXT CHECK (ended_by IN ('browser', 'pbx', 'gateway')),
    browser_status           BIGINT,
    browser_codec            TEXT,
    browser_packets_sent     BIGINT  NOT NULL DEFAULT 0,
    browser_packets_received BIGINT  NOT NULL DEFAULT 0,
    browser_packets_lost     BIGINT  NOT NULL DEFAULT 0,
    pbx_status               BIGINT,
    pbx_codec                TEXT,
    pbx_packets_sent         BIGINT  NOT NULL DEFAULT 0,
    pbx_packets_received     BIGINT  NOT NULL DEFAULT 0,
    pbx_packets_lost         BIGINT  NOT NULL DEFAULT 0
);

CREATE INDEX calls_started_at ON calls (started_at);
