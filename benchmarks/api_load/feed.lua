-- GET /feeds/{tag}.atom for the tag the runner seeded (env FEED_TAG, default "city").
dofile("report.lua")
wrk.path = "/feeds/" .. (os.getenv("FEED_TAG") or "city") .. ".atom"
