-- Sent before the revisions when the DBA allows a downgrade to drop tables that
-- hold rows (`--allow-data-loss`, `-x allow_data_loss=true`); the downgrade
-- guards read it (downgrade_guard.sql). Local to the migration's transaction.
SELECT pg_catalog.set_config('billingdb.allow_data_loss', 'on', true);
