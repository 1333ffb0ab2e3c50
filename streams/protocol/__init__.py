"""The protocol's rules, pure (sans-IO): no trio, no os, no I/O; time and randomness are
passed in. Everything the protocol decides is here as plain functions and `attrs` classes,
unit-tested without a server; `streams/` (the HTTP shell) and `actors/` call them."""
