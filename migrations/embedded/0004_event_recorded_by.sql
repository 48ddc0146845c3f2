-- Who wrote each event: the API key's name or the JWT's subject, set by the server from the
-- caller's credentials (a client cannot choose it). Empty when authentication is off, and for
-- events recorded before this column existed: nobody was identified.
ALTER TABLE events ADD COLUMN recorded_by TEXT NOT NULL DEFAULT '';
