"""defeah-db HTTP service: aiohttp app with health routes under /api/v1/health."""
