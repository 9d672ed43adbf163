-- wrk -s scripts/wrk-percentiles.lua ...: prints the latency distribution on one line
-- (p1 to p99.9, max and mean, in ms), for comparing the shape of two proxies' tails.
done = function(summary, latency, requests)
  local s = ""
  for _, p in ipairs({1, 10, 25, 50, 75, 90, 95, 99, 99.9}) do
    s = s .. string.format(" p%s=%.1f", p, latency:percentile(p) / 1000)
  end
  io.write(string.format("latency ms:%s max=%.1f mean=%.2f\n", s, latency.max / 1000, latency.mean / 1000))
end
