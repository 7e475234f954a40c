-- sotto-server on PostgreSQL, schema version 3: limits shared by every node (PgStore::
-- take_limit_token): a per-minute token bucket per key, e.g. the one-time prekeys one device
-- hands out a minute, so that the limit is the cluster's and not each node's. A row idle for a
-- minute is full again and is deleted. Never edited after release.

CREATE TABLE limit_buckets (
  key     TEXT             PRIMARY KEY,
  tokens  DOUBLE PRECISION NOT NULL,
  last_ms BIGINT           NOT NULL
);
CREATE INDEX limit_buckets_last ON limit_buckets (last_ms);
