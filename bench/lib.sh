# Shell functions the bench scripts share; sourced (`. bench/lib.sh`) from the repository root.

# Waits up to 30 s for something to listen on 127.0.0.1:$1; stops the script if nothing does.
wait_port() {
    for _ in $(seq 1 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2; exit 1
}
