-- sotto-server on PostgreSQL, schema version 4: relay rooms shared by every node (PgStore::
-- grant_relay_room): where each call's room is placed and who may get tokens for it, so every
-- node hands out the same relay for a call and a member that left cannot mint itself a way back
-- in through another node. Members are account names joined by ','. `seq` orders grants within
-- one millisecond (least recently used first). Never edited after release.

CREATE TABLE relay_rooms (
  room         TEXT   PRIMARY KEY,
  relay        TEXT   NOT NULL,
  owner        TEXT   NOT NULL,
  members      TEXT   NOT NULL,
  last_used_ms BIGINT NOT NULL,
  seq          BIGINT NOT NULL
);
CREATE SEQUENCE relay_room_seq;
CREATE INDEX relay_rooms_owner ON relay_rooms (owner, last_used_ms, seq);
CREATE INDEX relay_rooms_used ON relay_rooms (last_used_ms, seq);
