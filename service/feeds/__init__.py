"""Feeds: fetch (httpx), parse (RSS, Atom, JSON Feed), normalize and sanitize, store, poll."""
