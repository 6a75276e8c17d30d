-- Run at the start of every revision, inside its own transaction:
-- give up instead of queueing behind long locks, and bound every statement.
SET LOCAL lock_timeout = '5s';
SET LOCAL statement_timeout = '5min';
