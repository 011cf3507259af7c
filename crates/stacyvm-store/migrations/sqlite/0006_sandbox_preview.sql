-- Preview tokens (docs/preview.md): `preview_token` is the capability a preview request must
-- carry (32 hex digits drawn at spawn); `public_preview` (0 | 1) is the spawn's
-- `public_preview`: no token needed. Sandboxes that exist when this runs get a fresh token
-- from SQLite's CSPRNG, so their previews keep working for callers who read it back with
-- `GET /sandboxes/{id}`; destroyed rows keep '' (a token that matches nothing).
-- The Postgres twin is migrations/postgres/0006_sandbox_preview.sql.
ALTER TABLE sandboxes ADD COLUMN preview_token TEXT NOT NULL DEFAULT '';
ALTER TABLE sandboxes ADD COLUMN public_preview INTEGER NOT NULL DEFAULT 0;
UPDATE sandboxes SET preview_token = lower(hex(randomblob(16))) WHERE state <> 'destroyed';
