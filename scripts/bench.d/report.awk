# report.awk: turns scripts/bench's results into the Markdown table it prints and
# writes. Input lines: "<connections> <redis|mysql|flashstock> <rps> <p50 ms> <p99 ms>".
# Variables: rss (peak RSS, KiB), oversold (units), sellout (units of the sell-out run).

function label(what) {
    if (what == "redis") return "Redis ceiling: EVALSHA of lock.lua (redis-benchmark)"
    if (what == "mysql") return "MySQL row lock: FOR UPDATE transaction (mariadb-slap)"
    return "flashstock: lockOrder over HTTP (wrk)"
}
function verdict(ok) { return ok ? "met" : "**missed**" }

{
    if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 }
    rps[$1, $2] = $3; p50[$1, $2] = $4; p99[$1, $2] = $5
}

END {
    print "| connections | what | requests/s | p50 (ms) | p99 (ms) |"
    print "| ---: | --- | ---: | ---: | ---: |"
    for (i = 1; i <= n; i++) {
        c = order[i]
        split("redis mysql flashstock", systems, " ")
        for (j = 1; j <= 3; j++) {
            s = systems[j]
            printf "| %s | %s | %d | %.2f | %.2f |\n", c, label(s), rps[c, s], p50[c, s], p99[c, s]
        }
    }
    print ""
    print "| connections | flashstock ÷ MySQL row lock | flashstock ÷ Redis ceiling | flashstock p99 ÷ Redis p99 |"
    print "| ---: | ---: | ---: | ---: |"
    for (i = 1; i <= n; i++) {
        c = order[i]
        vs_mysql[c] = rps[c, "flashstock"] / rps[c, "mysql"]
        vs_redis[c] = rps[c, "flashstock"] / rps[c, "redis"]
        tail[c] = p99[c, "redis"] > 0 ? p99[c, "flashstock"] / p99[c, "redis"] : 0
        printf "| %s | %.1f× | %.0f%% | %.1f× |\n", c, vs_mysql[c], 100 * vs_redis[c], tail[c]
    }
    print ""
    mib = rss / 1024
    print "Service peak RSS (VmHWM): " sprintf("%.1f", mib) " MiB. Units held beyond stock: " oversold \
        " (in every run, and in a sell-out of " sellout " units at " order[n] " connections)."
    print ""
    print "| target | measured | |"
    print "| --- | ---: | --- |"
    base = ("50" in seen) ? "50" : order[1]
    printf "| lockOrder ≥ 10× the MySQL row lock at %s connections | %.1f× | %s |\n", base, vs_mysql[base], verdict(vs_mysql[base] >= 10)
    printf "| lockOrder ≥ 50%% of the Redis ceiling at %s connections | %.0f%% | %s |\n", base, 100 * vs_redis[base], verdict(vs_redis[base] >= 0.5)
    for (i = 1; i <= n; i++) {
        c = order[i]
        printf "| lockOrder p99 ≤ 5× the Redis ceiling's p99 at %s connections | %.1f× | %s |\n", c, tail[c], verdict(tail[c] <= 5)
    }
    printf "| service peak RSS < 100 MiB | %.1f MiB | %s |\n", mib, verdict(mib < 100)
    printf "| zero oversell | %d units | %s |\n", oversold, verdict(oversold == 0)
}
