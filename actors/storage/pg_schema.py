"""The PostgreSQL storage's tables (docs/scaling.md), created and migrated by the server on
start, one numbered step at a time, under an advisory lock so that processes starting
together migrate once."""

from __future__ import annotations

import psycopg

# MIGRATIONS[i] takes the schema from version i to i + 1; VERSION is what this code knows.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE ds_streams (
        id bigserial PRIMARY KEY,
        key bytea NOT NULL UNIQUE,
        name bytea NOT NULL,
        tail bigint NOT NULL DEFAULT 0,
        generation bigint NOT NULL DEFAULT 0,
        ttl bigint,
        expires_at double precision
    );
    CREATE TABLE ds_records (
        stream bigint NOT NULL REFERENCES ds_streams (id) ON DELETE CASCADE,
        at bigint NOT NULL,
        meta bytea NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (stream, at)
    );
    ALTER TABLE ds_records ALTER COLUMN data SET STORAGE EXTERNAL;
    CREATE TABLE ds_checkpoints (
        stream bigint PRIMARY KEY REFERENCES ds_streams (id) ON DELETE CASCADE,
        tail bigint NOT NULL,
        state bytea NOT NULL
    );
    CREATE TABLE ds_views (
        stream bigint PRIMARY KEY REFERENCES ds_streams (id) ON DELETE CASCADE,
        view bytea NOT NULL
    );
    CREATE TABLE ds_links (
        source bytea NOT NULL,
        fork_key bytea NOT NULL,
        fork bytea NOT NULL,
        incarnation text NOT NULL,
        PRIMARY KEY (source, fork_key)
    );
    CREATE TABLE ds_fork_sources (source bytea PRIMARY KEY, name bytea NOT NULL);
    """,
    # A sliding TTL's last access, shared by every process (docs/scaling.md); a migrated
    # stream counts as accessed now, as a restart does in the other modes.
    """
    ALTER TABLE ds_streams ADD COLUMN accessed_at double precision;
    UPDATE ds_streams SET accessed_at = extract(epoch FROM now());
    """,
    # Subscriptions and the webhook signing key ring (actors/storage/pg_subscriptions.py).
    """
    CREATE TABLE ds_subscriptions (id bytea PRIMARY KEY, record bytea NOT NULL);
    CREATE TABLE ds_subscription_keys (
        one boolean PRIMARY KEY DEFAULT true CHECK (one),
        ring bytea NOT NULL
    );
    """,
)
VERSION = len(MIGRATIONS)
LOCK = 0x64735F736368656D  # the advisory lock taken while migrating ("ds_schem")


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer server than this one."""


def migrate(connection: psycopg.Connection[tuple[object, ...]]) -> int:
    """Brings the database to `VERSION`; returns the version it had (0: none)."""
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
        connection.execute("CREATE TABLE IF NOT EXISTS ds_schema (version integer NOT NULL)")
        row = connection.execute("SELECT version FROM ds_schema").fetchone()
        found = int(str(row[0])) if row is not None else 0
        if found > VERSION:
            raise SchemaTooNew(
                f"the database's schema is version {found}, newer than this server's "
                f"({VERSION}): run the newer server, or restore a backup taken before it"
            )
        for step in MIGRATIONS[found:]:
            connection.execute(step.encode())
        if row is None:
            connection.execute("INSERT INTO ds_schema (version) VALUES (%s)", (VERSION,))
        else:
            connection.execute("UPDATE ds_schema SET version = %s", (VERSION,))
    return found
