-- The address OIDC sign-in matches a staff member by (the ID token's verified `email` claim).
-- Case-folded when stored; optional: accounts that sign in with a password need none.
ALTER TABLE staff_users ADD COLUMN email text UNIQUE;
