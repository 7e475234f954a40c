-- sotto-server on PostgreSQL, schema version 2: which node holds each device's live connection.
-- A login claims the device (epoch + 1); a connection reads its queue only while its epoch is
-- the row's (PgStore::pending_fenced), so an older connection on another node stops delivering
-- even if the takeover notice over NATS was lost. Never edited after release.

CREATE TABLE connections (
  user_name TEXT   NOT NULL,
  device    BIGINT NOT NULL,
  node      TEXT   NOT NULL,
  epoch     BIGINT NOT NULL,
  PRIMARY KEY (user_name, device)
);
