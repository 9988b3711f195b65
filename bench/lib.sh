# Shell functions the bench scripts share; sourced (`. bench/lib.sh`) from the repository root.

# Waits up to 30 s for something to listen on 127.0.0.1:$1; stops the script if nothing does.
wait_port() {
    for _ in $(seq 1 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2; exit 1
}

# The pid of the process listening on 127.0.0.1:$1 (a CE node among others that may be running);
# stops the script if there is none.
listener_pid() {
    local pid
    pid=$(ss -Hltnp "sport = :$1" | sed -nE 's/.*pid=([0-9]+).*/\1/p' | head -1)
    [ -n "$pid" ] || { echo "nothing with a pid listens on port $1" >&2; exit 1; }
    echo "$pid"
}

# utime + stime of process $1, in clock ticks; TICK_US is one tick in microseconds.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))
