-- GET /healthz: the framework's own ceiling.
dofile("report.lua")
wrk.path = "/healthz"
