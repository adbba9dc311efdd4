# report.awk: turns scripts/bench's results into the Markdown table it prints and
# writes. Input lines: "<connections> <redis|mysql|flashstock> <rps> <p50 ms> <p99 ms>",
# "<connections> ceiling_cpu <Redis µs per EVALSHA>" and
# "<connections> lock_cpu <service> <Redis> <MariaDB> <wrk>" (µs per lockOrder; "-" unknown).
# A measurement repeated over rounds gives several lines; each figure is their median, and
# each ratio the median of the rounds' ratios (a round's ceiling and service run back to back).
# Variables: rss (peak RSS, KiB), oversold (units), sellout (units of the sell-out run).

function label(what) {
    if (what == "redis") return "Redis ceiling: EVALSHA of lock.lua (redis-benchmark)"
    if (what == "mysql") return "MySQL row lock: FOR UPDATE transaction (mariadb-slap)"
    return "flashstock: lockOrder over HTTP (wrk)"
}
function verdict(ok) { return ok ? "met" : "**missed**" }

# Appends v to the space-separated list kept under key k of array a.
function add(a, k, v) { a[k] = (k in a) ? a[k] " " v : v }

# The median of a space-separated list of numbers ("-" when any is unknown).
function median(list,    x, m, i, j, t) {
    m = split(list, x, " ")
    for (i = 1; i <= m; i++) if (x[i] == "-") return "-"
    for (i = 2; i <= m; i++)
        for (j = i; j > 1 && x[j - 1] + 0 > x[j] + 0; j--) { t = x[j]; x[j] = x[j - 1]; x[j - 1] = t }
    return m % 2 ? x[(m + 1) / 2] : (x[m / 2] + x[m / 2 + 1]) / 2
}

$2 == "ceiling_cpu" { add(ceiling_cpu_l, $1, $3); next }
$2 == "lock_cpu" {
    add(service_l, $1, $3); add(redis_l, $1, $4); add(mariadb_l, $1, $5); add(wrk_l, $1, $6)
    next
}
{
    if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 }
    add(rps_l, $1 SUBSEP $2, $3); add(p50_l, $1 SUBSEP $2, $4); add(p99_l, $1 SUBSEP $2, $5)
    k = ++rounds[$1, $2]; round[$1, $2, "rps", k] = $3; round[$1, $2, "p99", k] = $5
}

# The median over the rounds of flashstock's figure ("rps" or "p99") ÷ the other
# system's in the same round (0 where the other's is 0).
function ratio(c, other, figure,    k, m, x) {
    delete ratios[c, other, figure]
    m = rounds[c, "flashstock"] < rounds[c, other] ? rounds[c, "flashstock"] : rounds[c, other]
    for (k = 1; k <= m; k++) {
        x = round[c, other, figure, k]
        add(ratios, c SUBSEP other SUBSEP figure, x > 0 ? round[c, "flashstock", figure, k] / x : 0)
    }
    return median(ratios[c, other, figure])
}

function whole(x) { return x == "-" ? x : sprintf("%.0f", x) }

END {
    for (k in rps_l) { rps[k] = median(rps_l[k]); p50[k] = median(p50_l[k]); p99[k] = median(p99_l[k]) }
    for (c in service_l) {
        cpu_service[c] = median(service_l[c]); cpu_redis[c] = median(redis_l[c])
        cpu_mariadb[c] = median(mariadb_l[c]); cpu_wrk[c] = median(wrk_l[c])
    }
    for (c in ceiling_cpu_l) ceiling_cpu[c] = median(ceiling_cpu_l[c])
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
        vs_mysql[c] = ratio(c, "mysql", "rps")
        vs_redis[c] = ratio(c, "redis", "rps")
        tail[c] = ratio(c, "redis", "p99")
        printf "| %s | %.1f× | %.0f%% | %.1f× |\n", c, vs_mysql[c], 100 * vs_redis[c], tail[c]
    }
    print ""
    print "CPU time per lock in µs (user + system, read from /proc around each measurement):"
    print ""
    print "| connections | Redis per EVALSHA, ceiling run | Redis per lockOrder | service per lockOrder | MariaDB per lockOrder (flusher) | wrk per lockOrder |"
    print "| ---: | ---: | ---: | ---: | ---: | ---: |"
    for (i = 1; i <= n; i++) {
        c = order[i]
        printf "| %s | %s | %s | %s | %s | %s |\n", c, whole(ceiling_cpu[c]), whole(cpu_redis[c]),
            whole(cpu_service[c]), whole(cpu_mariadb[c]), whole(cpu_wrk[c])
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
