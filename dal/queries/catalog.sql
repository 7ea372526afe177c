-- name: schema_objects
-- Every object our migrations own in the current schema, one (kind, name, definition) row
-- each, for drift detection: tables, columns, constraints, indexes, triggers, functions and
-- comments.  Reads only the system catalogs (no table data), so its cost does not grow with
-- the number of users.  Bookkeeping tables (yoyo's and defeah_migration_checksum) are left
-- out; NOT NULL constraints (contype 'n', PostgreSQL 18+) are covered by the column rows.
WITH rels AS (
    SELECT c.oid, c.relname
    FROM pg_class AS c
    WHERE c.relnamespace = current_schema()::regnamespace
      AND c.relkind IN ('r', 'p')
      AND c.relname NOT LIKE '\_yoyo\_%'
      AND c.relname NOT IN ('yoyo_lock', 'defeah_migration_checksum')
)
SELECT 'table' AS kind, r.relname AS name, '' AS definition FROM rels AS r
UNION ALL
SELECT 'column', r.relname || '.' || a.attname,
       format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
       || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
FROM rels AS r
JOIN pg_attribute AS a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
UNION ALL
SELECT 'constraint', r.relname || '.' || k.conname, pg_get_constraintdef(k.oid)
FROM rels AS r JOIN pg_constraint AS k ON k.conrelid = r.oid
WHERE k.contype <> 'n'
UNION ALL
SELECT 'index', ic.relname,
       pg_get_indexdef(i.indexrelid) || CASE WHEN i.indisvalid THEN '' ELSE ' -- INVALID' END
FROM rels AS r
JOIN pg_index AS i ON i.indrelid = r.oid
JOIN pg_class AS ic ON ic.oid = i.indexrelid
UNION ALL
SELECT 'trigger', r.relname || '.' || t.tgname, pg_get_triggerdef(t.oid)
FROM rels AS r JOIN pg_trigger AS t ON t.tgrelid = r.oid AND NOT t.tgisinternal
UNION ALL
SELECT 'function', p.oid::regprocedure::text,
       regexp_replace(pg_get_functiondef(p.oid), '\s+', ' ', 'g')
FROM pg_proc AS p
WHERE p.pronamespace = current_schema()::regnamespace
UNION ALL
SELECT 'comment', 'table ' || r.relname, ds.description
FROM rels AS r JOIN pg_description AS ds
    ON ds.objoid = r.oid AND ds.classoid = 'pg_class'::regclass AND ds.objsubid = 0
UNION ALL
SELECT 'comment', 'column ' || r.relname || '.' || a.attname, ds.description
FROM rels AS r
JOIN pg_attribute AS a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_description AS ds
    ON ds.objoid = r.oid AND ds.classoid = 'pg_class'::regclass AND ds.objsubid = a.attnum
UNION ALL
SELECT 'comment', 'index ' || ic.relname, ds.description
FROM rels AS r
JOIN pg_index AS i ON i.indrelid = r.oid
JOIN pg_class AS ic ON ic.oid = i.indexrelid
JOIN pg_description AS ds
    ON ds.objoid = ic.oid AND ds.classoid = 'pg_class'::regclass AND ds.objsubid = 0
UNION ALL
SELECT 'comment', 'function ' || p.oid::regprocedure::text, ds.description
FROM pg_proc AS p
JOIN pg_description AS ds ON ds.objoid = p.oid AND ds.classoid = 'pg_proc'::regclass
WHERE p.pronamespace = current_schema()::regnamespace
ORDER BY 1, 2;
