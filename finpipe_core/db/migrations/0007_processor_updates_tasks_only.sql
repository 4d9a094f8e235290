-- depends: 0006_revisions
-- Tasks are the manager's: a processor moves an existing task forward (status, bars, error,
-- completed_at) and no longer creates one for results nobody asked for.
REVOKE INSERT ON tasks FROM finpipe_processor;
