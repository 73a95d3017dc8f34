-- wrk: POST /auth/password/login with the account bench/accounts.sh made
-- (BENCH_LOGIN_EMAIL, BENCH_LOGIN_PASSWORD), counting answers by status.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = string.format('{"email":"%s","password":"%s"}', os.getenv("BENCH_LOGIN_EMAIL"),
                         os.getenv("BENCH_LOGIN_PASSWORD"))

local threads = {}
function setup(thread)
    table.insert(threads, thread)
end

function init(args)
    statuses = {}
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
    local total = {}
    for _, t in ipairs(threads) do
        local s = t:get("statuses")
        for k, v in pairs(s) do total[k] = (total[k] or 0) + v end
    end
    local parts = {}
    for k, v in pairs(total) do table.insert(parts, string.format('"%d":%d', k, v)) end
    io.write(string.format('statuses: {%s}\n', table.concat(parts, ",")))
    io.write(string.format('latency_us: p50=%d p99=%d max=%d\n', latency:percentile(50),
                           latency:percentile(99), latency.max))
end
