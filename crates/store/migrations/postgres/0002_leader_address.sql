-- Where the holder of a leader lease serves (a URL), so the other replicas
-- can forward requests to it. Written with every take and renewal; '' when
-- the holder gave none (and for leases taken before this column existed).
ALTER TABLE leader ADD COLUMN address text NOT NULL DEFAULT '';
