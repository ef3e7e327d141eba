"""What mailbox providers tell us back: bounces, complaints, deliveries, unsubscribes.

Each source (a provider's webhook, an SMTP bounce mailbox) turns what it receives into
`MailEvent`s, one per recipient; `policy.record` stores each once by its id and applies the
suppression policy.
"""
