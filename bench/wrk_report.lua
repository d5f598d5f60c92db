-- wrk script: prints one machine-readable line at the end of a run.
-- With WRK_PATHS="/a,/b,/c" in the environment each request takes the next path in turn
-- (used by the RSS section to mix workloads); without it wrk sends its one static request.
local paths = {}
local env = os.getenv("WRK_PATHS")
if env and #env > 0 then
  for p in string.gmatch(env, "[^,]+") do paths[#paths + 1] = p end
end
if #paths > 0 then
  local i = 0
  request = function()
    i = i % #paths + 1
    return wrk.format(nil, paths[i])
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"lat_mean_us":%.1f,"lat_p50_us":%d,' ..
    '"lat_p90_us":%d,"lat_p99_us":%d,"lat_p999_us":%d,"lat_max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9), latency.max))
end
