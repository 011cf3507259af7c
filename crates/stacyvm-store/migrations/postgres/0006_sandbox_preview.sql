-- Preview tokens (docs/preview.md): `preview_token` is the capability a preview request must
-- carry (32 hex digits drawn at spawn); `public_preview` (0 | 1) is the spawn's
-- `public_preview`: no token needed. Sandboxes that exist when this runs get a fresh token
-- (gen_random_uuid() draws from the server's strong random source; 122 random bits), so their
-- previews keep working for callers who read it back with `GET /sandboxes/{id}`; destroyed
-- rows keep '' (a token that matches nothing).
-- The SQLite twin is migrations/sqlite/0006_sandbox_preview.sql.
ALTER TABLE sandboxes ADD COLUMN preview_token TEXT COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE sandboxes ADD COLUMN public_preview BIGINT NOT NULL DEFAULT 0;
UPDATE sandboxes SET preview_token = replace(gen_random_uuid()::text, '-', '')
    WHERE state <> 'destroyed';
