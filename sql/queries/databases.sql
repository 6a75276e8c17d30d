-- name: database_exists
-- One row when a database of this name exists on the server.
SELECT 1 AS found
FROM pg_catalog.pg_database AS d
WHERE d.datname = %(name)s;

-- name: create_database_statement
-- The statement that creates a database (optionally from a template), its
-- names quoted by PostgreSQL: CREATE DATABASE cannot take parameters.
SELECT
    format('CREATE DATABASE %%I', %(name)s::text)
    || CASE
        WHEN %(template)s::text IS NOT null THEN format(' TEMPLATE %%I', %(template)s::text) ELSE ''
    END AS statement;

-- name: drop_database_statement
-- The statement that drops a database, disconnecting its sessions.
SELECT format('DROP DATABASE IF EXISTS %%I WITH (FORCE)', %(name)s::text) AS statement;

-- name: extension_available
-- One row when the server has this extension's files (it can be created).
SELECT 1 AS found
FROM pg_catalog.pg_available_extensions AS x
WHERE x.name = %(name)s;

-- name: create_extension_statement
-- The statement that creates an extension in this database when missing.
SELECT format('CREATE EXTENSION IF NOT EXISTS %%I', %(name)s::text) AS statement;
