"""Users: the repository (CRUD), its models, bcrypt passwords, the sign-in flow and the
sign-in's operator jobs (unlock, prune and keep events)."""
