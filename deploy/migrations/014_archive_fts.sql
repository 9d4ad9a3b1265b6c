-- 014_archive_fts.sql — full-text search (XEP-0431) per owner.
-- 005's `archive_fulltext` was one GIN over every owner's bodies: a query
-- for a common word built the bitmap of all its matches in the whole
-- archive (1.33 M rows for "hello" in the 10 M-row bench) before keeping
-- the owner's. With btree_gin (a trusted extension shipped with
-- PostgreSQL, so the migrating role may create it) the owner is part of
-- each GIN entry and the scan walks only that owner's postings.
-- tests/bench/README.md, "Full-text search per owner", has the figures.
CREATE EXTENSION IF NOT EXISTS btree_gin;
CREATE INDEX archive_fulltext_owner ON archive USING gin (domain, username, body_tsv);
DROP INDEX archive_fulltext;
