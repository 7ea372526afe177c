"""Development data: the seed users of ``seeds/*.sql`` and the bulk generator."""
