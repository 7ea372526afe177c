-- name: schema_objects
-- Every object our migrations own in the current schema, one (kind, name, definition, rel)
-- row each, for drift detection: tables, columns, constraints, indexes, triggers, functions,
-- comments, and how tables are partitioned.  ``rel`` names the relation an object belongs to
-- (the indexed table for an index; NULL for a function), so that the objects of one monthly
-- partition can be compared with the shape every monthly partition must have
-- (dal/db/partitions.py).  Reads only the system catalogs (no table data), so its cost does not
-- grow with the number of users.  Partition bounds are printed in the session's TimeZone,
-- which the callers set to UTC.  Bookkeeping tables (yoyo's and defeah_migration_checksum)
-- are left out; NOT NULL constraints (contype 'n', PostgreSQL 18+) are covered by the column
-- rows.
WITH rels AS (
    SELECT c.oid, c.relname, c.relkind, c.relpartbound
    FROM pg_class AS c
    WHERE c.relnamespace = current_schema()::regnamespace
      AND c.relkind IN ('r', 'p')
      AND c.relname NOT LIKE '\_yoyo\_%'
      AND c.relname NOT IN ('yoyo_lock', 'defeah_migration_checksum')
)
-- name is text, not the catalog's 63-byte name type, so that long keys (a function comment)
-- are not cut.
SELECT 'table' AS kind, r.relname::text AS name, '' AS definition, r.relname::text AS rel
FROM rels AS r
UNION ALL
SELECT 'partitioned', r.relname, pg_get_partkeydef(r.oid), r.relname
FROM rels AS r WHERE r.relkind = 'p'
UNION ALL
SELECT 'partition', r.relname, 'of ' || p.relname || ' ' || pg_get_expr(r.relpartbound, r.oid),
       r.relname
FROM rels AS r
JOIN pg_inherits AS i ON i.inhrelid = r.oid
JOIN pg_class AS p ON p.oid = i.inhparent
UNION ALL
SELECT 'column', r.relname || '.' || a.attname,
       format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
       || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), ''),
       r.relname
FROM rels AS r
JOIN pg_attribute AS a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
UNION ALL
SELECT 'constraint', r.relname || '.' || k.conname, pg_get_constraintdef(k.oid), r.relname
FROM rels AS r JOIN pg_constraint AS k ON k.conrelid = r.oid
WHERE k.contype <> 'n'
UNION ALL
SELECT 'index', ic.relname,
       pg_get_indexdef(i.indexrelid) || CASE WHEN i.indisvalid THEN '' ELSE ' -- INVALID' END,
       r.relname
FROM rels AS r
JOIN pg_index AS i ON i.indrelid = r.oid
JOIN pg_class AS ic ON ic.oid = i.indexrelid
UNION ALL
SELECT 'trigger', r.relname || '.' || t.tgname, pg_get_triggerdef(t.oid), r.relname
FROM rels AS r JOIN pg_trigger AS t ON t.tgrelid = r.oid AND NOT t.tgisinternal
UNION ALL
SELECT 'function', p.oid::regprocedure::text,
       regexp_replace(pg_get_functiondef(p.oid), '\s+', ' ', 'g'), NULL
FROM pg_proc AS p
WHERE p.pronamespace = current_schema()::regnamespace
UNION ALL
SELECT 'comment', 'table ' || r.relname, ds.description, r.relname
FROM rels AS r JOIN pg_description AS ds
    ON ds.objoid = r.oid AND ds.classoid = 'pg_class'::regclass AND ds.objsubid = 0
UNION ALL
SELECT 'comment', 'column ' || r.relname || '.' || a.attname, ds.description, r.relname
FROM rels AS r
JOIN pg_attribute AS a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_description AS ds
    ON ds.objoid = r.oid AND ds.classoid = 'pg_class'::regclass AND ds.objsubid = a.attnum
UNION ALL
SELECT 'comment', 'index ' || ic.relname, ds.description, r.relname
FROM rels AS r
JOIN pg_index AS i ON i.indrelid = r.oid
JOIN pg_class AS ic ON ic.oid = i.indexrelid
JOIN pg_description AS ds
    ON ds.objoid = ic.oid AND ds.classoid = 'pg_class'::regclass AND ds.objsubid = 0
UNION ALL
SELECT 'comment', 'function ' || p.oid::regprocedure::text, ds.description, NULL
FROM pg_proc AS p
JOIN pg_description AS ds ON ds.objoid = p.oid AND ds.classoid = 'pg_proc'::regclass
WHERE p.pronamespace = current_schema()::regnamespace
ORDER BY 1, 2;

-- name: catalog_clock^
-- The database's clock and the session's TimeZone, read with the catalog: which months are
-- "current" and "next" for the partition findings is the database's business (its now()
-- writes the rows), and partition bounds are only comparable when printed in UTC.
SELECT now() AS now, current_setting('TimeZone') AS timezone;

-- name: default_partition_rows#
-- How many rows a default partition holds, counted up to 1,000 (a finding needs "some", and a
-- full count of a large default partition would be a scan).  {partition} is a quoted
-- identifier taken from the catalog (an identifier cannot be a bind parameter).
SELECT count(*) AS n FROM (SELECT 1 FROM {partition} LIMIT 1000) AS sample;
