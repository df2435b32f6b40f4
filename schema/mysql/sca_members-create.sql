-- sca_rs: who belongs to which shared AoR (docs/security.md).
CREATE TABLE `sca_members` (
    `id` INT(10) UNSIGNED AUTO_INCREMENT PRIMARY KEY NOT NULL,
    `aor` VARCHAR(255) NOT NULL,
    `member` VARCHAR(255) NOT NULL,
    CONSTRAINT sca_members_aor_member_idx UNIQUE (`aor`, `member`)
);

INSERT INTO version (table_name, table_version) values ('sca_members','1');
