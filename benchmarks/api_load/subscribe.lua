-- POST /api/subscriptions, a new address each request. The client address the rate limiter
-- keys on comes from X-Forwarded-For (uvicorn trusts it from 127.0.0.1): with IP_PER=connection
-- (the default) each connection (= wrk thread) is one client; with IP_PER=request every
-- request comes from a new address. RUN_ID keeps runs' addresses apart (the window is 1 min).
dofile("report.lua")

local per_request = os.getenv("IP_PER") == "request"
local run = tonumber(os.getenv("RUN_ID") or "1") % 200
local n = 0

local function address(k)
  return string.format("%d.%d.%d.%d", 20 + run, math.floor(k / 65536) % 256,
    math.floor(k / 256) % 256, k % 256)
end

function request()
  n = n + 1
  local ip = per_request and address(n * 64 + id) or address(id)
  local body = string.format(
    '{"email": "load-%d-%d-%d@readers.example", "tags": ["city"], "cadence": "daily"}',
    run, id, n)
  return wrk.format("POST", "/api/subscriptions",
    {["Content-Type"] = "application/json", ["X-Forwarded-For"] = ip}, body)
end
