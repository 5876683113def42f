-- Every call attempt leaves a row, including those refused before a widget is known (an unknown or
-- malformed public id, a draining or overloaded gateway): widget_name and destination become optional,
-- and each row keeps the public id the browser dialled. Keep in step with ../postgres/0002_refused_calls.sql.
--
-- SQLite cannot drop a NOT NULL constraint in place, so the table is rebuilt with the same ids.

CREATE TABLE calls_new (
    id                       INTEGER PRIMARY KEY,
    widget_id                INTEGER REFERENCES widgets (id) ON DELETE SET NULL,
    -- NULL when no widget has the dialled public id.
    widget_name              TEXT,
    -- The public id from the Request-URI, as dialled; NULL when the URI carried none.
    dialled                  TEXT,
    trunk_id                 INTEGER REFERENCES trunks (id) ON DELETE SET NULL,
    trunk_name               TEXT,
    source_ip                TEXT    NOT NULL,
    user_agent               TEXT,
    -- NULL when no widget has the dialled public id.
    destination              TEXT,
    started_at               INTEGER NOT NULL,
    answered_at              INTEGER,
    ended_at                 INTEGER,
    end_cause                TEXT,
    ended_by                 TEXT CHECK (ended_by IN ('browser', 'pbx', 'gateway')),
    browser_status           INTEGER,
    browser_codec            TEXT,
    browser_packets_sent     INTEGER NOT NULL DEFAULT 0,
    browser_packets_received INTEGER NOT NULL DEFAULT 0,
    browser_packets_lost     INTEGER NOT NULL DEFAULT 0,
    pbx_status               INTEGER,
    pbx_codec                TEXT,
    pbx_packets_sent         INTEGER NOT NULL DEFAULT 0,
    pbx_packets_received     INTEGER NOT NULL DEFAULT 0,
    pbx_packets_lost         INTEGER NOT NULL DEFAULT 0,
    CHECK ((widget_name IS NULL) = (destination IS NULL))
);

INSERT INTO calls_new (id, widget_id, widget_name, dialled, trunk_id, trunk_name, source_ip, user_agent,
                       destination, started_at, answered_at, ended_at, end_cause, ended_by, browser_status,
                       browser_codec, browser_packets_sent, browser_packets_received, browser_packets_lost,
                       pbx_status, pbx_codec, pbx_packets_sent, pbx_packets_received, pbx_packets_lost)
SELECT id, widget_id, widget_name, (SELECT public_id FROM widgets WHERE widgets.id = calls.widget_id),
       trunk_id, trunk_name, source_ip, user_agent, destination, started_at, answered_at, ended_at, end_cause,
       ended_by, browser_status, browser_codec, browser_packets_sent, browser_packets_received,
       browser_packets_lost, pbx_status, pbx_codec, pbx_packets_sent, pbx_packets_received, pbx_packets_lost
FROM calls;

DROP TABLE calls;
ALTER TABLE calls_new RENAME TO calls;
CREATE INDEX calls_started_at ON calls (started_at);
