"""Everything a reader does: subscribe, confirm, preferences, unsubscribe, export, erase."""
