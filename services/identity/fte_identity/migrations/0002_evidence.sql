-- Evidence levels (fte.identity.v1.Evidence): 1 claimed, 2 the channel proved it, 3 a one-time
-- code proved it, 4 a staff member vouched for it. A row is verified exactly when it is not a claim.
ALTER TABLE identifiers ADD COLUMN evidence smallint NOT NULL DEFAULT 1 CHECK (evidence BETWEEN 1 AND 4);
UPDATE identifiers SET evidence = 2 WHERE verified;
ALTER TABLE identifiers ADD CONSTRAINT identifiers_evidence_verified CHECK ((evidence = 1) = (NOT verified));
-- A proven WhatsApp sender proves its phone number too: backfill the phone of each WhatsApp owner.
INSERT INTO identifiers (customer_id, kind, value, raw_value, verified, evidence, verify_time)
SELECT w.customer_id, 2, substr(w.value, 10), substr(w.value, 10), true, 2, w.verify_time
FROM identifiers w
WHERE w.kind = 3 AND w.verified
ON CONFLICT DO NOTHING;
