-- lock_order.lua: the wrk script of scripts/bench. Every request is one lockOrder of
-- one unit of BENCH_PRODUCT_ID, signed with the next customer token of BENCH_TOKENS
-- (one token a line), so the load spreads over many customers as a sale's would.
-- Every body is read: a request counts as held only when the payload says HELD with no
-- errors, as sold out only on INSUFFICIENT_STOCK; anything else is counted as other.
--
-- done() prints one line for scripts/bench:
--   BENCH_RESULT requests=N seconds=S p50_us=N p99_us=N held=N sold_out=N other=N socket_errors=N

local threads = {}

function setup(thread)
  thread:set("offset", #threads * 7919)
  table.insert(threads, thread)
end

function init(args)
  local payload = string.format(
    '{"query":"mutation lock($p: ID!) { lockOrder(input: { items: [{ productId: $p, quantity: 1 }] }) '
      .. '{ order { id status heldUntil } errors { code productId available } } }","variables":{"p":"%s"}}',
    os.getenv("BENCH_PRODUCT_ID"))
  -- Every request is formatted once, here: the load generator shares the machine's cores
  -- with the service, so what it spends per request is taken from the service.
  requests = {}
  for line in io.lines(os.getenv("BENCH_TOKENS")) do
    if #line > 0 then
      requests[#requests + 1] = wrk.format("POST", "/graphql",
        { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. line },
        payload)
    end
  end
  next_request = offset % #requests + 1
  held, sold_out, other = 0, 0, 0
end

function request()
  local r = requests[next_request]
  next_request = next_request % #requests + 1
  return r
end

function response(status, headers, body)
  if status == 200 and body:find('"status":"HELD"', 1, true) and body:find('"errors":[]', 1, true) then
    held = held + 1
  elseif status == 200 and body:find('"code":"INSUFFICIENT_STOCK"', 1, true) then
    sold_out = sold_out + 1
  else
    other = other + 1
    if other <= 3 then
      io.stderr:write(string.format("unexpected reply %d: %s\n", status, body))
    end
  end
end

function done(summary, latency, requests)
  local h, s, o = 0, 0, 0
  for _, thread in ipairs(threads) do
    h = h + thread:get("held")
    s = s + thread:get("sold_out")
    o = o + thread:get("other")
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d seconds=%.3f p50_us=%d p99_us=%d held=%d sold_out=%d other=%d socket_errors=%d\n",
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    h, s, o, e.connect + e.read + e.write + e.timeout))
end
