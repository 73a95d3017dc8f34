-- wrk's done() hook for the bench/ scripts: wrk --latency prints only the
-- 50/75/90/99th percentiles, rounded; this prints the 50th, 99th and
-- 99.9th and the maximum, in microseconds (wrk's own resolution), on one
-- line that bench/report.py reads:
--   latency_us: p50=N p99=N p99.9=N max=N count=N
-- bench/db.sh passes it to wrk as is (-s bench/latency.lua); bench/notes.sh
-- appends it to the scripts it writes.
done = function(summary, latency, requests)
  io.write(string.format("latency_us: p50=%d p99=%d p99.9=%d max=%d count=%d\n",
                         latency:percentile(50), latency:percentile(99),
                         latency:percentile(99.9), latency.max, summary.requests))
end
