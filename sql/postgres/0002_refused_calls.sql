-- Every call attempt leaves a row, including those refused before a widget is known (an unknown or
-- malformed public id, a draining or overloaded gateway): widget_name and destination become optional,
-- and each row keeps the public id the browser dialled. Keep in step with ../sqlite/0002_refused_calls.sql.

ALTER TABLE calls
    ALTER COLUMN widget_name DROP NOT NULL,
    ALTER COLUMN destination DROP NOT NULL,
    -- The public id from the Request-URI, as dialled; NULL when the URI carried none.
    ADD COLUMN dialled TEXT,
    ADD CHECK ((widget_name IS NULL) = (destination IS NULL));

UPDATE calls SET dialled = (SELECT public_id FROM widgets WHERE widgets.id = calls.widget_id);
