-- sca_rs: who belongs to which shared AoR (docs/security.md).
-- aor and member are compared as user@host (scheme, port, parameters
-- dropped, host lower-cased): 'sip:line1@example.com' and 'alice@example.com'.
CREATE TABLE sca_members (
    id INTEGER PRIMARY KEY NOT NULL,
    aor VARCHAR(255) NOT NULL,
    member VARCHAR(255) NOT NULL,
    CONSTRAINT sca_members_aor_member_idx UNIQUE (aor, member)
);

INSERT INTO version (table_name, table_version) values ('sca_members','1');
