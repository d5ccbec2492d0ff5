#!/bin/sh
# Runs inside the systemd-node VM (build-image.sh --test smoke.sh): berthd
# under systemd reports ready (Type=notify is "active" only after
# READY=1), logs to the journal with priorities, reloads on
# `systemctl reload`, and comes back after kill -9 (Restart=always).
set -u
fail=0
check() {
    if eval "$2"; then echo "ok: $1"; else echo "FAIL: $1"; fail=1; fi
}
wait_active() {
    i=0
    while [ "$(systemctl is-active berthd)" != active ] && [ $i -lt 120 ]; do sleep 1; i=$((i + 1)); done
}
wait_active
. /usr/local/lib/berth-vm-test/service-checks.sh
service_checks
mkdir -p /etc/berth/config.d
printf 'log_level = "debug"\n' > /etc/berth/config.d/50-debug.toml
check "config dump names the drop-in" 'berthd config dump | grep -q "log_level = \"debug\"  # /etc/berth/config.d/50-debug.toml"'
systemctl reload berthd
i=0
while ! journalctl -u berthd -o cat | grep -q "configuration reloaded" && [ $i -lt 30 ]; do sleep 1; i=$((i + 1)); done
check "reload logged" 'journalctl -u berthd -o cat | grep -q "configuration reloaded.*log_level"'
pid=$(systemctl show -p MainPID --value berthd)
kill -9 "$pid"
i=0
while [ "$(systemctl show -p MainPID --value berthd)" = "$pid" ] && [ $i -lt 60 ]; do sleep 1; i=$((i + 1)); done
wait_active
check "restarted after kill -9" '[ "$(systemctl show -p NRestarts --value berthd)" -ge 1 ] && [ "$(systemctl show -p MainPID --value berthd)" != "$pid" ]'
check "boot id stored" '[ -s /var/lib/berth/boot.json ]'
exit $fail
