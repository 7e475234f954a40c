-- sotto-server on PostgreSQL, schema version 1: the same tables as the SQLite store.
-- Applied once, in one transaction, by PgStore::open (see src/store/postgres.rs); never edited
-- after release: a change is a new file 0002_*.sql listed in MIGRATIONS.

CREATE TABLE devices (
  user_name  TEXT   NOT NULL,
  device     BIGINT NOT NULL,
  identity   BYTEA  NOT NULL,
  updated_ms BIGINT NOT NULL,
  PRIMARY KEY (user_name, device)
);

-- kind 0: signed prekey, 1: KEM prekey
CREATE TABLE signed_prekeys (
  user_name TEXT     NOT NULL,
  device    BIGINT   NOT NULL,
  kind      SMALLINT NOT NULL,
  key_id    BIGINT   NOT NULL,
  public    BYTEA    NOT NULL,
  signature BYTEA    NOT NULL,
  PRIMARY KEY (user_name, device, kind)
);

CREATE TABLE one_time_prekeys (
  user_name TEXT   NOT NULL,
  device    BIGINT NOT NULL,
  key_id    BIGINT NOT NULL,
  public    BYTEA  NOT NULL,
  PRIMARY KEY (user_name, device, key_id)
);

-- ids come from a sequence: never reused, and for one recipient increasing in commit order
-- (an enqueue holds the recipient's devices row lock from before it draws its id to its commit)
CREATE TABLE envelopes (
  id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  to_user     TEXT   NOT NULL,
  to_device   BIGINT NOT NULL,
  from_user   TEXT   NOT NULL,
  from_device BIGINT NOT NULL,
  stored_ms   BIGINT NOT NULL,
  expires_ms  BIGINT NOT NULL,
  ciphertext  BYTEA  NOT NULL
);
CREATE INDEX envelopes_to ON envelopes (to_user, to_device, id);
CREATE INDEX envelopes_expiry ON envelopes (expires_ms);
