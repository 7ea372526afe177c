"""A user's Instagram connection: its repository and models, the token key ring and cipher,
the refresh workers and re-encryption under a new key."""
