-- When the customer was told a person would follow up by: set on escalation, read for the
-- reply-due time (computed from it and the playbook's support hours on every read, so a change
-- of hours applies to every open ticket).
ALTER TABLE tickets ADD COLUMN follow_up_by_time timestamptz;
