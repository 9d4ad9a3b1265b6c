-- 011_muc_room.sql — sb-muc: room archiving (XEP-0313 on the room, its rows
-- in `archive` with domain = the service and username = the room's node)
-- and reserved nicks (XEP-0045 §7.10 registration: a member's nick).
ALTER TABLE muc_rooms ADD COLUMN archiving boolean NOT NULL DEFAULT false;
ALTER TABLE muc_affiliations ADD COLUMN nick text;          -- NULL: none reserved
CREATE UNIQUE INDEX muc_affiliations_nick ON muc_affiliations (room, nick)
    WHERE nick IS NOT NULL;
