"""The served graph API: custom routes, auth, the front-door gate, request checks and the embedded Postgres."""
