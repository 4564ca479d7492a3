-- Album normalisation in batches: the tracks of a batch that share an
-- album are measured first, wait for the rest of their album, then render
-- with the album's shared loudness offset (coordinator/src/service/albums.rs).
ALTER TABLE jobs ADD COLUMN album TEXT;
-- The pass due: 'measure', 'wait' (measured; queued but not taken until
-- its album is measured), 'render'. NULL for a job outside any album.
ALTER TABLE jobs ADD COLUMN album_stage TEXT;
-- The first pass's answer (a Measurement as JSON).
ALTER TABLE jobs ADD COLUMN measurement TEXT;
CREATE INDEX jobs_album ON jobs (batch_id, album);
