-- GET the URL's path (with its query) over and over: a catch-up read of a whole stream that
-- one response covers (checked before by the harness).
COUNTERS = {}
