"""Digests and delivery: schedules, planning editions, what each reader gets, sending.

schedules   what is due, per reader's time zone and hour (DST-safe)
planning    editions and their delivery rows, written in keyset chunks, send tasks after commit
content     which posts a reader gets (the window since their last digest, less the post ledger)
compose     render once per distinct tag set and zone, personalize per reader
sending     claim, send, record: the delivery ledger's invariants
sweep       leases past due become `unknown`; stalled editions are enqueued again
"""
