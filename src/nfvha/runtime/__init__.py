"""The asyncio engine: feeds events to the core managers, runs their commands through drivers,
routes messages, and records everything in the trace."""
