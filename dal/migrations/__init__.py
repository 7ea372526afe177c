"""Migration tooling for the DBA: the yoyo runner (timeouts, retries, checksums), dry runs,
drift against the snapshot, the schema state readiness reports, and rehearsal at volume."""
