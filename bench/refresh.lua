-- wrk script for the refresh-under-load benchmark: rotates requests over a few cache keys
-- (resources of the default target), one key per request, in a fixed order.
-- The list can be overridden with BENCH_REFRESH_RESOURCES (space-separated).
local resources = {}
local from_env = os.getenv("BENCH_REFRESH_RESOURCES")
if from_env and #from_env > 0 then
  for r in string.gmatch(from_env, "%S+") do
    resources[#resources + 1] = r
  end
else
  resources = {"https://graph.microsoft.com", "https://vault.azure.net", "https://storage.azure.com"}
end

local requests = {}
for i, r in ipairs(resources) do
  requests[i] = wrk.format("GET", "/token?resource=" .. r,
                           {["Host"] = wrk.host .. ":" .. wrk.port, ["Metadata"] = "true"})
end

local n = 0
request = function()
  n = n + 1
  return requests[(n % #requests) + 1]
end
