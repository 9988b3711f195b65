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

# Stops what a script comparing servers started: every pid in its `pids` array, and Aerospike
# CE on port $ce_started when that is set (`trap stop_started EXIT`).
stop_started() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ -n "${ce_started:-}" ]; then "$CE" stop "$ce_started" >/dev/null 2>&1 || true; fi
}

# utime + stime of process $1, in clock ticks; TICK_US is one tick in microseconds.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))

# Runs one bench script against Apogee and Aerospike CE in one run, the shape of
# bench/sindex.sh, bench/udf.sh and bench/geo.sh: builds the release binary, starts Apogee
# (`storage-engine memory`, or APOGEE_BIN) on port $2 over $OUT, runs `$PY $4 --port $2 ARGS`,
# then, unless NO_CE is set or $CE is missing, starts CE on port $3 (its namespace `test` is in
# memory too) and runs the script against it; prints each as "<server>: <script output>".
# With WITH_PID=1 the script also gets `--pid <server pid>`. Stops only what it started.
#   side_by_side NAME APOGEE_PORT CE_PORT SCRIPT [ARGS...]
side_by_side() {
    local name=$1 port=$2 ce_port=$3 script=$4
    shift 4
    CE=${CE:-/work/shared/anchors/aerospike.sh}
    TARGET_DIR=${CARGO_TARGET_DIR:-target}
    OUT=${OUT:-$TARGET_DIR/$name-bench}
    PY=${PY:-.venv/bin/python}
    cargo build --release -q -p apogee-server
    rm -rf "$OUT" && mkdir -p "$OUT"
    printf '[namespace.test]\nstorage-engine = "memory"\ndata-size = 4294967296\n' > "$OUT/a.toml"
    SIDE_PID=""
    SIDE_CE_PORT=""
    trap side_by_side_cleanup EXIT
    "${APOGEE_BIN:-$TARGET_DIR/release/apogee}" --port "$port" --data-dir "$OUT/data" \
        --config "$OUT/a.toml" > "$OUT/apogee.log" 2>&1 &
    SIDE_PID=$!
    wait_port "$port"
    local pid_arg=()
    [ -n "${WITH_PID:-}" ] && pid_arg=(--pid "$SIDE_PID")
    echo "apogee: $("$PY" "$script" --port "$port" "$@" "${pid_arg[@]}")"
    if [ -z "${NO_CE:-}" ] && [ -x "$CE" ]; then
        "$CE" start "$ce_port" > "$OUT/ce.log" 2>&1
        SIDE_CE_PORT=$ce_port
        [ -n "${WITH_PID:-}" ] && pid_arg=(--pid "$(listener_pid "$ce_port")")
        echo "aerospike-ce: $("$PY" "$script" --port "$ce_port" "$@" "${pid_arg[@]}")"
    fi
}

side_by_side_cleanup() {
    if [ -n "$SIDE_PID" ]; then
        kill "$SIDE_PID" 2>/dev/null || true
        wait "$SIDE_PID" 2>/dev/null || true
    fi
    if [ -n "$SIDE_CE_PORT" ]; then "$CE" stop "$SIDE_CE_PORT" >/dev/null 2>&1 || true; fi
}
